"""Train a brick collection with Lightning: one ``LightningModule`` for any collection.

:class:`BrickLightningModule` turns a :class:`~brickzoo.BrickCollection` into a
``lightning.pytorch.LightningModule``, so everything Lightning's ``Trainer`` offers (devices,
``strategy="ddp"``/``"fsdp"``, ``num_nodes``, precision, checkpointing, loggers,
``limit_*_batches``) works without subclassing:

- ``training_step``/``validation_step``/``test_step`` run the ``MODEL`` and ``LOSS`` bricks of the
  main collection for :class:`~brickzoo.Stage` ``TRAIN``/``VALIDATION``/``TEST``; the loss is the
  (optionally weighted) sum of :meth:`~brickzoo.BrickCollection.extract_losses`.
- The ``METRIC`` bricks run from a separate copy per stage (``stage_metrics["TRAIN"]``, ...), fed
  with the outputs of the main collection, so training and validation batches never meet in one
  metric. The model weights exist once. At each epoch end the stage's metrics are computed
  (torchmetrics gathers its states across processes at compute time), logged with the prefix
  ``train/``, ``val/`` or ``test/`` and reset.
- ``predict_step`` returns the ``MODEL`` outputs as a dict of named tensors.

This module imports ``lightning`` (the optional extra ``brickzoo[lightning]``); ``import brickzoo``
does not.
"""

from __future__ import annotations

import copy
import difflib
import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sized
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any, cast

import lightning.pytorch as pl
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from brickzoo._collection import BrickCollection
from brickzoo._groups import LOSS, METRIC, MODEL, Stage
from brickzoo.errors import BrickDefinitionError, DataError, WeightsError
from brickzoo.training._loop import channels_last_while, resolve_amp, set_channels_last
from brickzoo.training._step import (
    BOXES_DROPPED,
    TOTAL_LOSS,
    batch_size,
    check_loss_names,
    check_losses,
    require_named_batch,
    set_data_epoch,
    total_loss,
)

__all__ = ["STAGE_PREFIXES", "BrickLightningModule", "load_collection_from_lightning_checkpoint"]

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]

STAGE_PREFIXES: dict[Stage, str] = {Stage.TRAIN: "train", Stage.VALIDATION: "val", Stage.TEST: "test"}
"""The prefix of every value logged in a stage (``train/loss``, ``val/head0/MulticlassAccuracy``)."""

_METRIC_STAGES = tuple(STAGE_PREFIXES)
_CHECKPOINT_PREFIX = "collection."


def _rebuild_generator(device: str, state: bytes) -> torch.Generator:
    generator = torch.Generator(device)
    generator.set_state(torch.frombuffer(bytearray(state), dtype=torch.uint8))
    return generator


def _reduce_generator(generator: torch.Generator) -> tuple[Any, tuple[str, bytes]]:
    """Hand a ``torch.Generator`` to another process by value (its state as bytes).

    torch's own reduction pickles a temporary state tensor; under ``strategy="ddp_spawn"`` that
    tensor goes through shared memory and its file descriptor is closed before the new process
    starts ("bad value(s) in fds_to_keep"). Seeded DataLoaders (``brickzoo.data.make_loader``)
    hold a generator, so without this they cannot be sent to spawned processes.
    """
    return _rebuild_generator, (str(generator.device), generator.get_state().numpy().tobytes())


ForkingPickler.register(torch.Generator, _reduce_generator)


def _metric_only_collection(collection: BrickCollection) -> BrickCollection | None:
    """A deep copy of the ``METRIC`` bricks of ``collection`` at the same paths (so names resolve alike).

    Returns None when the collection has no ``METRIC`` brick.
    """
    nested: dict[str, Any] = {}
    for path, brick in collection.named_bricks():
        if METRIC not in brick.groups:
            continue
        shared = sorted(brick.groups & {MODEL, LOSS})
        if shared:
            raise BrickDefinitionError(
                f"BrickLightningModule: brick '{path}' belongs to groups {sorted(brick.groups)}; METRIC bricks run "
                f"from a separate copy per stage, so they cannot also be in {shared}. Split it into a {shared[0]} "
                "brick that writes a tensor and a METRIC-only brick that reads it"
            )
        *parents, key = path.split("/")
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
        node[key] = copy.deepcopy(brick)
    if not nested:
        return None
    metrics = BrickCollection(nested)
    metrics.reset_metrics()
    return metrics


def _metric_stages(log_metrics: bool | Iterable[Stage | str]) -> frozenset[Stage]:
    if log_metrics is True:
        return frozenset(_METRIC_STAGES)
    if log_metrics is False:
        return frozenset()
    stages = set()
    for item in log_metrics:
        try:
            stage = Stage(item)
        except ValueError:
            stage = None
        if stage not in _METRIC_STAGES:
            raise BrickDefinitionError(
                f"BrickLightningModule: log_metrics must be True, False or a set of stages among "
                f"{[s.value for s in _METRIC_STAGES]}, got {item!r} in {log_metrics!r}"
            )
        stages.add(stage)
    return frozenset(stages)


class BrickLightningModule(pl.LightningModule):
    """A ``LightningModule`` that trains, validates, tests and predicts with a brick collection.

    Args:
        collection: the bricks; its ``MODEL`` and ``LOSS`` bricks are run (and trained) in place, its
            ``METRIC`` bricks are copied once per stage. Saved in checkpoints under ``collection.``.
        optimizer_factory: ``optimizer_factory(params) -> torch.optim.Optimizer``, called with the list
            of parameters that require gradients, e.g. ``lambda params: torch.optim.AdamW(params, 1e-3)``.
        scheduler_factory: optional ``scheduler_factory(optimizer)`` returning a learning-rate
            scheduler (stepped once per epoch) or a Lightning scheduler dict
            (``{"scheduler": ..., "interval": "step", "monitor": "val/loss"}``).
        loss_weights: ``{loss name: weight}``; the training loss is ``sum(weight * loss)`` over
            :meth:`~brickzoo.BrickCollection.extract_losses`, missing names weigh 1.
        log_metrics: run and log the ``METRIC`` bricks in every stage (True), in none (False), or in
            the given stages (``{Stage.VALIDATION, Stage.TEST}`` skips them during training).

    Logged values (``self.log``):
        ``train/loss`` and ``train/<loss name>`` per step; ``val/...`` and ``test/...`` the same per
        epoch (averaged over all samples of all processes); ``<prefix>/<metric key>`` for every
        scalar metric of :meth:`~brickzoo.BrickCollection.summarize` at each epoch end;
        ``<prefix>/boxes_dropped`` per epoch (summed over all processes) when the batches count the
        boxes their transforms dropped. The full summaries (non-scalar values included) stay in
        :attr:`epoch_metrics`.

    At the start of each training epoch, every dataset of the training loaders with a
    ``set_epoch`` (:class:`~brickzoo.data.transforms.TransformedDataset`) gets the epoch, so
    the augmentations differ from epoch to epoch and depend only on ``(seed, index, epoch)``.

    Batches are dicts of named tensors holding at least
    ``collection.required_inputs(...)`` of the stage; a batch missing some raises
    :class:`~brickzoo.errors.MissingInputsError` naming the stage before anything runs. The
    first batch of each loader (``batch_idx == 0``) runs through
    :meth:`~brickzoo.BrickCollection.check_batch`, so target values the bricks refuse (a class
    index out of range) raise :class:`~brickzoo.errors.BrickInputError` before the first step.
    The module pickles when its factories do (``functools.partial`` of module-level functions),
    as ``strategy="ddp_spawn"`` needs.

    Example:
        >>> import lightning.pytorch as pl
        >>> module = BrickLightningModule(collection, lambda params: torch.optim.SGD(params, lr=0.1))
        >>> trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=2)
        >>> trainer.fit(module, train_dataloader, val_dataloader)  # batches: {"images": ..., "labels": ...}
        >>> trainer.callback_metrics["val/loss"]
    """

    def __init__(
        self,
        collection: BrickCollection,
        optimizer_factory: OptimizerFactory,
        scheduler_factory: SchedulerFactory | None = None,
        loss_weights: Mapping[str, float] | None = None,
        log_metrics: bool | Iterable[Stage | str] = True,
    ) -> None:
        super().__init__()
        if not isinstance(collection, BrickCollection):
            raise BrickDefinitionError(
                f"BrickLightningModule: collection must be a BrickCollection, got {type(collection).__name__}; "
                "wrap a dict of bricks with BrickCollection(...)"
            )
        if not callable(optimizer_factory):
            raise BrickDefinitionError(
                "BrickLightningModule: optimizer_factory must be callable as optimizer_factory(params), "
                f"got {type(optimizer_factory).__name__}"
            )
        if scheduler_factory is not None and not callable(scheduler_factory):
            raise BrickDefinitionError(
                "BrickLightningModule: scheduler_factory must be None or callable as scheduler_factory(optimizer), "
                f"got {type(scheduler_factory).__name__}"
            )
        self.collection = collection
        self.optimizer_factory = optimizer_factory
        self.scheduler_factory = scheduler_factory
        loss_names = collection.loss_names()
        self.loss_weights = self._check_loss_weights(loss_weights or {}, loss_names)
        check_loss_names(loss_names, "BrickLightningModule")
        self.metric_stages = _metric_stages(log_metrics)
        stage_metrics: dict[str, BrickCollection] = {}
        for stage in sorted(self.metric_stages):
            metrics = _metric_only_collection(collection)
            if metrics is not None:
                stage_metrics[stage.value] = metrics
        # One metric-only copy per stage, keyed by the stage's value ("TRAIN", "VALIDATION", "TEST").
        self.stage_metrics = nn.ModuleDict(stage_metrics)
        self.epoch_metrics: dict[str, dict[str, Any]] = {}
        """The last summary of each stage, keyed by ``train``/``val``/``test`` (all values, on the CPU)."""

    # -- checks ------------------------------------------------------------------------------
    @staticmethod
    def _check_loss_weights(loss_weights: Mapping[str, float], loss_names: list[str]) -> dict[str, float]:
        problems = []
        for name, weight in loss_weights.items():
            if name not in loss_names:
                hint = difflib.get_close_matches(name, loss_names, n=3, cutoff=0.5)
                problems.append(f"{name!r} is not a loss name" + (f" (did you mean {hint}?)" if hint else ""))
            elif isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
                problems.append(f"{name!r} has weight {weight!r}, expected a finite number")
        if problems:
            raise BrickDefinitionError(
                "BrickLightningModule: bad loss_weights: " + "; ".join(problems) + f"; the loss names are {loss_names}"
            )
        return {name: float(weight) for name, weight in loss_weights.items()}

    def _groups(self, stage: Stage, with_metrics: bool) -> frozenset[str]:
        groups = stage.groups - {METRIC}
        return groups | {METRIC} if with_metrics else groups

    def _check_present(self, batch: Any, stage: Stage, groups: frozenset[str], hook: str) -> None:
        """Raise before anything runs if ``batch`` is not a dict or lacks a name the stage's bricks read.

        Raises:
            DataError: the batch is not a dict of named tensors.
            MissingInputsError: the collection's one diagnostic, prefixed with the stage and hook.
        """
        source = f"BrickLightningModule, stage {stage.value} ({hook})"
        require_named_batch(batch, source)
        self.collection.check_inputs_present(batch, groups, stage, source=source)

    def on_fit_start(self) -> None:
        """Refuse to train a collection without loss bricks before the first step."""
        if not self.collection.loss_names():
            bricks = [path for path, _ in self.collection.named_bricks()]
            raise BrickDefinitionError(
                f"BrickLightningModule, stage {Stage.TRAIN.value}: the collection has no loss brick (no brick in the "
                f"LOSS group), so there is nothing to train; got bricks {bricks}. Add a BrickLoss, or use "
                "trainer.validate/test/predict"
            )

    # -- steps -----------------------------------------------------------------------------
    def forward(self, named_inputs: dict[str, Any]) -> dict[str, Any]:
        """Run the ``MODEL`` bricks (:class:`Stage` ``INFERENCE``) and return what they wrote."""
        return self._model_outputs(named_inputs, check=False)

    def _model_outputs(self, named_inputs: dict[str, Any], check: bool) -> dict[str, Any]:
        if not check:
            return self.collection(named_inputs, groups=Stage.INFERENCE, return_inputs=False)
        outputs = self.collection.check_batch(named_inputs, groups=Stage.INFERENCE)
        return {name: value for name, value in outputs.items() if name not in named_inputs and name != "stage"}

    def _shared_step(self, batch: Any, stage: Stage, hook: str, batch_idx: int) -> dict[str, Any]:
        """Run a stage on a batch; the first batch of a loader (``batch_idx == 0``) runs through ``check_batch``."""
        metrics = self._metrics(stage)
        self._check_present(batch, stage, self._groups(stage, metrics is not None), hook)
        first = batch_idx == 0
        run = self.collection.check_batch if first else self.collection
        outputs = run(batch, groups=self._groups(stage, False), stage=stage)
        losses = self.collection.extract_losses(outputs)
        check_losses(losses, f"BrickLightningModule, stage {stage.value}")
        total = total_loss(losses, self.loss_weights) if losses else None
        if metrics is not None:
            with torch.no_grad():
                (metrics.check_batch if first else metrics)(outputs, groups=METRIC, stage=stage)
        if total is not None:
            self._log_losses(stage, total, losses, batch)
        self._log_boxes_dropped(stage, batch)
        return {"loss": total, "outputs": outputs}

    def _log_boxes_dropped(self, stage: Stage, batch: Mapping[str, Any]) -> None:
        """Log ``<prefix>/boxes_dropped``: the boxes the transforms dropped, summed over the epoch and every process.

        Only for batches that count them (``boxes_dropped``, from
        :class:`~brickzoo.data.transforms.TransformedDataset`); the count stays on the device (no sync per step).
        """
        dropped = batch.get(BOXES_DROPPED)
        if isinstance(dropped, torch.Tensor):
            total = dropped.sum().float()  # the logger reduces floats
            name = f"{STAGE_PREFIXES[stage]}/{BOXES_DROPPED}"
            self.log(name, total, on_step=False, on_epoch=True, reduce_fx="sum", sync_dist=True)

    def _log_losses(
        self, stage: Stage, total: torch.Tensor, losses: Mapping[str, torch.Tensor], batch: Mapping[str, Any]
    ) -> None:
        """Log the total and each loss: per step in training, per epoch (over every process) otherwise."""
        prefix = STAGE_PREFIXES[stage]
        on_step = stage is Stage.TRAIN
        options: dict[str, Any] = {
            "on_step": on_step,
            "on_epoch": not on_step,
            "sync_dist": not on_step,
            "batch_size": batch_size(batch),
        }
        parts = {f"{prefix}/{name}": loss.detach() for name, loss in losses.items() if name != TOTAL_LOSS}
        if parts:
            self.log_dict(parts, **options)
        self.log(f"{prefix}/{TOTAL_LOSS}", total.detach(), prog_bar=True, **options)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Run ``MODEL`` + ``LOSS`` (and the train metrics); return ``{"loss": total, "outputs": named}``."""
        result = self._shared_step(batch, Stage.TRAIN, "training_step", batch_idx)
        if result["loss"] is None:
            raise BrickDefinitionError(
                f"BrickLightningModule, stage {Stage.TRAIN.value}: no loss brick wrote an output; "
                f"loss names {self.collection.loss_names()}"
            )
        return result

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """Run ``MODEL`` + ``LOSS`` and update the validation metrics; return ``{"loss", "outputs"}``."""
        return self._shared_step(batch, Stage.VALIDATION, "validation_step", batch_idx)

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """Run ``MODEL`` + ``LOSS`` and update the test metrics; return ``{"loss", "outputs"}``."""
        return self._shared_step(batch, Stage.TEST, "test_step", batch_idx)

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """The tensors written by the ``MODEL`` bricks (the inputs left out)."""
        self._check_present(batch, Stage.INFERENCE, Stage.INFERENCE.groups, "predict_step")
        return self._model_outputs(batch, check=batch_idx == 0)

    # -- metrics at epoch boundaries ---------------------------------------------------------
    def _metrics(self, stage: Stage) -> BrickCollection | None:
        """The metric-only collection of a stage (None when the stage runs no metrics)."""
        if stage.value not in self.stage_metrics:
            return None
        return cast(BrickCollection, self.stage_metrics[stage.value])

    def _reset_metrics(self, stage: Stage) -> None:
        metrics = self._metrics(stage)
        if metrics is not None:
            metrics.reset_metrics()

    def _log_epoch_metrics(self, stage: Stage) -> None:
        metrics = self._metrics(stage)
        if metrics is None:
            return
        # compute() is collective under DDP: torchmetrics gathers every process's states first, so each
        # process gets the value over the whole dataset. Every process must get here (Lightning ensures it).
        values = metrics.summarize(reset=True)
        prefix = STAGE_PREFIXES[stage]
        self.epoch_metrics[prefix] = {
            key: value.detach().cpu() if isinstance(value, torch.Tensor) else value for key, value in values.items()
        }
        if self._trainer is None or self.trainer.sanity_checking:
            return
        scalars = {
            f"{prefix}/{key}": torch.as_tensor(value).detach().float().reshape(())
            for key, value in values.items()
            if isinstance(value, (int, float)) or (isinstance(value, torch.Tensor) and value.numel() == 1)
        }
        if scalars:
            # The values are equal on every process already; a "max" reduction keeps them exact and
            # tells Lightning they are synchronised.
            self.log_dict(scalars, on_step=False, on_epoch=True, sync_dist=True, reduce_fx="max")

    def on_train_epoch_start(self) -> None:
        """Reset the train metrics and give the training datasets the epoch (``set_epoch``) of their augmentation.

        Lightning creates the iterator of each epoch after this hook (that of the first epoch
        before it, while the datasets are still at epoch 0), so the augmentations of epoch ``e``
        depend only on ``(seed, index, e)``.
        """
        self._reset_metrics(Stage.TRAIN)
        if self._trainer is not None:
            loaders = self.trainer.train_dataloader
            if isinstance(loaders, Mapping):
                loaders = list(loaders.values())
            for loader in loaders if isinstance(loaders, (list, tuple)) else [loaders]:
                set_data_epoch(loader, self.current_epoch)

    def on_validation_epoch_start(self) -> None:
        self._reset_metrics(Stage.VALIDATION)

    def on_test_epoch_start(self) -> None:
        self._reset_metrics(Stage.TEST)

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics(Stage.TRAIN)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics(Stage.VALIDATION)

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics(Stage.TEST)

    # -- optimisation ------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        """``optimizer_factory(trainable parameters)`` and the optional ``scheduler_factory(optimizer)``."""
        params = [p for p in self.collection.parameters() if p.requires_grad]
        if not params:
            raise BrickDefinitionError(
                "BrickLightningModule: the collection has no parameter that requires gradients; "
                "there is nothing to optimise (are all bricks BrickNotTrainable?)"
            )
        optimizer = self.optimizer_factory(params)
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise BrickDefinitionError(
                "BrickLightningModule: optimizer_factory(params) must return a torch.optim.Optimizer, "
                f"got {type(optimizer).__name__}"
            )
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        if isinstance(scheduler, Mapping):
            if "scheduler" not in scheduler:
                raise BrickDefinitionError(
                    "BrickLightningModule: scheduler_factory(optimizer) returned a dict without the key "
                    f"'scheduler'; got keys {sorted(scheduler)}, expected a Lightning scheduler dict like "
                    "{'scheduler': ..., 'interval': 'step'}"
                )
            config = dict(scheduler)
        elif hasattr(scheduler, "step") and hasattr(scheduler, "state_dict"):
            config = {"scheduler": scheduler}
        else:
            raise BrickDefinitionError(
                "BrickLightningModule: scheduler_factory(optimizer) must return a learning-rate scheduler or a "
                f"Lightning scheduler dict, got {type(scheduler).__name__}"
            )
        return {"optimizer": optimizer, "lr_scheduler": config}


def load_collection_from_lightning_checkpoint(
    path: str | Path, collection: BrickCollection, strict: bool = True, weights_only: bool = True
) -> BrickCollection:
    """Load the collection saved in a Lightning checkpoint of a :class:`BrickLightningModule`.

    Args:
        path: a ``.ckpt`` file written by Lightning (``ModelCheckpoint`` or ``trainer.save_checkpoint``).
        collection: a freshly built collection with the same bricks; its weights are replaced.
        strict: if True, every tensor of the collection must be in the checkpoint with the same
            shape and the checkpoint may hold no other collection tensor; otherwise
            :class:`~brickzoo.errors.WeightsError` lists the differences and nothing is loaded. If
            False, the matching tensors are loaded and the rest is left as it is.
        weights_only: read the file with ``torch.load(weights_only=True)`` (no code runs); pass
            False only for trusted checkpoints holding other objects.

    Returns:
        ``collection``, with the checkpoint's weights.

    Example:
        >>> collection = load_collection_from_lightning_checkpoint("runs/last.ckpt", build_collection())
        >>> collection({"images": images}, groups="MODEL")["head0/logits"]
    """
    file = Path(path)
    if not file.is_file():
        raise WeightsError(f"Lightning checkpoint {file} does not exist or is not a file")
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=weights_only)
    except Exception as exc:
        hint = "; if the file is trusted, pass weights_only=False" if weights_only else ""
        raise WeightsError(f"cannot read Lightning checkpoint {file}: {type(exc).__name__}: {exc}{hint}") from exc
    state = checkpoint.get("state_dict") if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping):
        got = sorted(checkpoint) if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise WeightsError(f"{file} is not a Lightning checkpoint: expected a dict with 'state_dict', got {got}")
    saved = {k.removeprefix(_CHECKPOINT_PREFIX): v for k, v in state.items() if k.startswith(_CHECKPOINT_PREFIX)}
    if not saved and state:
        examples = sorted(state)[:5]
        raise WeightsError(
            f"{file}: no tensor starts with '{_CHECKPOINT_PREFIX}' (got {examples}...); expected a checkpoint of a "
            "BrickLightningModule"
        )
    own = collection.state_dict()
    bricks = sorted((path for path, _ in collection.named_bricks()), key=len, reverse=True)

    def where(key: str) -> str:  # "head.classify.model.weight" -> "brick 'head/classify': model.weight"
        for path in bricks:
            prefix = path.replace("/", ".") + "."
            if key.startswith(prefix):
                return f"brick '{path}': {key.removeprefix(prefix)}"
        return key

    problems = [f"{where(k)} (missing from the checkpoint)" for k in own if k not in saved]
    problems += [f"{where(k)} (not in the collection)" for k in saved if k not in own]
    problems += [
        f"{where(k)} (checkpoint {list(v.shape)} vs collection {list(own[k].shape)})"
        for k, v in saved.items()
        if k in own and isinstance(v, torch.Tensor) and tuple(v.shape) != tuple(own[k].shape)
    ]
    if strict and problems:
        raise WeightsError(
            f"Lightning checkpoint {file} does not match the collection; nothing was loaded:\n  "
            + "\n  ".join(problems)
            + "\nuse strict=False to load what matches"
        )
    usable = {k: v for k, v in saved.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    collection.load_state_dict(usable, strict=False)
    return collection


# -- the CLI's lightning engine ------------------------------------------------------------------
_PRECISION = {"none": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}
_ACCELERATOR = {"auto": "auto", "cuda": "gpu", "cpu": "cpu"}


def _config_optimizer(params: list[nn.Parameter], collection: BrickCollection, config: Any) -> torch.optim.Optimizer:
    """The ``optimizer_factory`` of :class:`_RecipeModule`: :func:`~brickzoo.training.build_optimizer`'s
    param groups (no decay on 1-D tensors, lr multipliers, frozen bricks left out), over the same
    trainable parameters as ``params``. A module-level function, so ``functools.partial`` of it pickles."""
    from brickzoo.training import build_optimizer

    return build_optimizer(collection, config)


class _RecipeModule(BrickLightningModule):
    """A :class:`BrickLightningModule` trained as a :class:`~brickzoo.training.TrainConfig` says.

    The optimizer is :func:`~brickzoo.training.build_optimizer`'s; the warm-up + cosine schedule is
    stepped after every optimizer step and spans ``trainer.estimated_stepping_batches``, the optimizer
    steps Lightning will take on each process (devices, nodes, ``limit_train_batches`` and the
    loader's ``drop_last`` all counted). Everything it holds pickles, for ``strategy="ddp_spawn"``.
    """

    def __init__(self, collection: BrickCollection, config: Any) -> None:
        factory = functools.partial(_config_optimizer, collection=collection, config=config)
        super().__init__(collection, factory, loss_weights=config.loss_weights)
        self.train_config = config
        self.schedule_steps = 0
        """The length of the learning-rate schedule in optimizer steps, set when training starts."""

    def configure_optimizers(self) -> Any:
        """The optimizer and the per-step warm-up + cosine schedule over every optimizer step of the fit."""
        from brickzoo.training import build_scheduler

        optimizer = super().configure_optimizers()
        steps = self.trainer.estimated_stepping_batches
        if not math.isfinite(steps) or steps < 1:
            loader = self.trainer.train_dataloader
            dataset = getattr(loader, "dataset", None)
            raise DataError(
                f"lightning: the training loader gives {steps} optimizer steps (dataset of "
                f"{len(dataset) if isinstance(dataset, Sized) else '?'} samples shared by {self.trainer.world_size} "
                f"processes, batch_size {getattr(loader, 'batch_size', None)} per process, drop_last "
                f"{getattr(loader, 'drop_last', None)}); lower data.batch_size, add samples or set data.drop_last=false"
            )
        self.schedule_steps = int(steps)
        scheduler = build_scheduler(optimizer, self.train_config, self.schedule_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def final_record(self, trainer: pl.Trainer) -> dict[str, Any]:
        """``final_metrics.json``: epoch, optimizer steps, schedule length, the last lr and the logged scalars."""
        (config,) = trainer.lr_scheduler_configs
        scheduler = cast(LambdaLR, config.scheduler)  # build_scheduler's
        factor = scheduler.lr_lambdas[0](max(trainer.global_step - 1, 0))
        record: dict[str, Any] = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "schedule_steps": self.schedule_steps,
            "lr": self.train_config.lr * factor,  # of the last step, for bricks without an lr multiplier
        }
        record.update(_logged_scalars(trainer))
        return record


class _RunFolderWriter(pl.Callback):
    """At the end of the fit, global rank 0 alone writes the run folder's results.

    ``weights/`` (per-brick weights, what ``brickzoo evaluate --weights <run_dir>`` loads),
    ``graph.md``, ``predictions.png`` (on ``preview``, the first validation batch) and
    ``final_metrics.json``. The other processes write nothing.
    """

    def __init__(self, run_dir: Path, preview: Mapping[str, Any] | None) -> None:
        self.run_dir = run_dir
        self.preview = preview

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from brickzoo.training import write_final_metrics, write_graph, write_predictions

        if not trainer.is_global_zero:
            return
        module = cast(_RecipeModule, pl_module)
        collection = module.collection.cpu().eval()
        set_channels_last(collection, False)
        collection.save_bricks(self.run_dir / "weights", exist_ok=True)
        write_graph(self.run_dir, collection)
        if self.preview is not None:
            write_predictions(self.run_dir, collection, dict(self.preview))
        write_final_metrics(self.run_dir, module.final_record(trainer))


def _logged_scalars(trainer: pl.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if isinstance(v, torch.Tensor) and v.numel() == 1}


def fit_with_lightning(
    recipe: Any,
    run_dir: str | Path,
    devices: int | str | list[int] = "auto",
    strategy: str = "auto",
    num_nodes: int = 1,
    quiet: bool = False,
) -> dict[str, float]:
    """Train a zoo recipe (:func:`brickzoo.zoo.build_recipe`) with Lightning's ``Trainer``.

    The recipe's ``train`` settings map onto Lightning: the optimizer and warm-up + cosine schedule
    of :mod:`brickzoo.training` (stepped per optimizer step, as long as the optimizer steps the
    trainer will take: ``trainer.estimated_stepping_batches``), ``grad_clip_norm`` to
    ``gradient_clip_val``, ``amp`` to ``precision`` (``"auto"`` resolved for ``device`` by
    :func:`~brickzoo.training.resolve_amp`), ``channels_last`` to the weights' memory format
    (returned to the default before the weights are written) and ``loss_weights`` to the module. Lightning
    swaps in a ``DistributedSampler`` under ``ddp``/``fsdp``, so each process sees its share of
    the data. The module, its factories and the loaders pickle, so ``ddp_spawn`` works too.

    Only global rank 0 writes to ``run_dir``: logs to ``<run_dir>/lightning`` (CSV), Lightning
    checkpoints to ``<run_dir>/lightning/checkpoints``, and at the end the per-brick weights to
    ``<run_dir>/weights`` (what ``brickzoo evaluate --weights <run_dir>`` loads), ``graph.md``,
    ``predictions.png`` and ``final_metrics.json`` (``epoch``, ``step``: the optimizer steps
    taken, ``schedule_steps``: the schedule's length, ``lr`` and the logged metrics).

    Returns:
        The metrics Lightning logged last (``val/...`` and ``train/...``), as numbers.

    Raises:
        DataError: the training loader yields no batch on a process.
    """
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    config = recipe.train_config
    run_dir = Path(run_dir)
    val_loader = recipe.loader("val") if "val" in recipe.datasets else None
    preview = next(iter(recipe.loader("val", shuffle=False))) if val_loader is not None else None
    module = _RecipeModule(recipe.model, config)
    trainer = pl.Trainer(
        max_epochs=config.epochs,
        limit_train_batches=config.steps_per_epoch,
        devices=devices,
        strategy=strategy,
        num_nodes=num_nodes,
        accelerator=_ACCELERATOR[config.device],
        precision=_PRECISION[resolve_amp(config.amp, config.device)],  # type: ignore[arg-type]
        gradient_clip_val=config.grad_clip_norm,
        default_root_dir=run_dir,
        logger=CSVLogger(run_dir, name="lightning", version=""),
        callbacks=[
            ModelCheckpoint(dirpath=run_dir / "lightning" / "checkpoints", save_last=True),
            _RunFolderWriter(run_dir, preview),
        ],
        enable_progress_bar=not quiet,
        enable_model_summary=not quiet,
        log_every_n_steps=config.log_every,
    )
    pl.seed_everything(config.seed, workers=True, verbose=False)
    with channels_last_while(module.collection, config.channels_last):  # _RunFolderWriter also undoes it first
        trainer.fit(module, recipe.loader("train"), val_loader)
    return _logged_scalars(trainer)
