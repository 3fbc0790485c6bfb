"""Training: the loop, checkpoints, the run folder and fine-tuning helpers.

Everything here takes a :class:`~brickzoo.BrickCollection` and plain DataLoaders of dicts of
named tensors; nothing is specific to a task.

- :func:`fit` trains (warm-up + cosine schedule, clipping, mixed precision, validation each
  epoch) and, given a ``run_dir``, writes the run folder:

  - ``train_config.json``: the :class:`TrainConfig` (``config.json`` is left to the caller's
    whole config, see :func:`write_config`);
  - ``metrics.jsonl``: one JSON line per epoch (``epoch``, ``step``, ``lr``, ``seconds``,
    ``train/...`` losses and metrics, ``val/...`` losses and metrics);
  - ``final_metrics.json``: the last epoch's values, non-scalar metrics included as lists;
  - ``loss_curves.png``, ``predictions.png`` (the visualization bricks on the first validation
    batch) and ``graph.md`` (the mermaid graph of the bricks);
  - ``checkpoint/``: per-brick weights plus ``trainer_state.pt``, swapped in atomically, from
    which ``fit(..., resume=True)`` continues exactly.

- :func:`evaluate` runs a stage over a loader and returns its losses and metrics.
- :func:`load_finetune_weights`, :func:`freeze` and ``TrainConfig.lr_multipliers`` serve fine-tuning.

Example:
    >>> from brickzoo.training import TrainConfig, fit
    >>> result = fit(collection, train_loader, val_loader, TrainConfig(epochs=3), run_dir="runs/demo")  # doctest: +SKIP
"""

from brickzoo.training._checkpoint import (
    capture_rng_state,
    find_checkpoint,
    load_trainer_state,
    restore_rng_state,
    save_checkpoint,
)
from brickzoo.training._config import TrainConfig
from brickzoo.training._finetune import (
    build_optimizer,
    find_fitting_weights,
    freeze,
    load_finetune_weights,
    load_weights,
    matches,
    param_groups,
    weights_folder,
)
from brickzoo.training._loop import (
    FitResult,
    evaluate,
    fit,
    native_bf16,
    resolve_amp,
    resolve_device,
    seed_everything,
    seeded,
    set_channels_last,
)
from brickzoo.training._plots import Panel, plot_loss_curves, plot_panels, predictions_grid
from brickzoo.training._run_folder import (
    check_output_folder,
    lock_run_folder,
    make_output_folder,
    read_metrics,
    run_checkpoint,
    visualize_batch,
    write_config,
    write_final_metrics,
    write_graph,
    write_loss_curves,
    write_metrics,
    write_predictions,
)
from brickzoo.training._schedule import build_scheduler, lr_factor, warmup_steps

__all__ = [
    "FitResult",
    "Panel",
    "TrainConfig",
    "build_optimizer",
    "build_scheduler",
    "capture_rng_state",
    "check_output_folder",
    "evaluate",
    "find_checkpoint",
    "find_fitting_weights",
    "fit",
    "freeze",
    "load_finetune_weights",
    "load_trainer_state",
    "load_weights",
    "lock_run_folder",
    "lr_factor",
    "make_output_folder",
    "matches",
    "native_bf16",
    "param_groups",
    "plot_loss_curves",
    "plot_panels",
    "predictions_grid",
    "read_metrics",
    "resolve_amp",
    "resolve_device",
    "restore_rng_state",
    "run_checkpoint",
    "save_checkpoint",
    "seed_everything",
    "seeded",
    "set_channels_last",
    "visualize_batch",
    "warmup_steps",
    "weights_folder",
    "write_config",
    "write_final_metrics",
    "write_graph",
    "write_loss_curves",
    "write_metrics",
    "write_predictions",
]
