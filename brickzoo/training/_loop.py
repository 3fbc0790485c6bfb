"""The training loop, :func:`fit`, and :func:`evaluate`.

One training step is::

    outputs = collection(batch, stage=Stage.TRAIN)          # MODEL + LOSS + METRIC bricks
    loss = sum(weight[name] * value for name, value in collection.extract_losses(outputs).items())
    loss.backward(); clip_grad_norm_(...); optimizer.step(); scheduler.step()

Batches are dicts of named tensors from plain DataLoaders; nothing here knows about a task.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import RandomSampler
from tqdm.auto import tqdm

from brickzoo._collection import BrickCollection
from brickzoo._groups import Stage
from brickzoo.errors import BrickDefinitionError, BrickRuntimeError, ConfigError, DataError, WeightsError
from brickzoo.training._checkpoint import (
    capture_rng_state,
    find_checkpoint,
    load_trainer_state,
    preserved_rng,
    restore_rng_state,
    save_checkpoint,
)
from brickzoo.training._config import TrainConfig
from brickzoo.training._finetune import build_optimizer, freeze
from brickzoo.training._run_folder import (
    TRAIN_CONFIG_FILE,
    VISUALIZATION_GROUPS,
    has_visualizations,
    read_metrics,
    scalars,
    to_python,
    write_config,
    write_final_metrics,
    write_graph,
    write_loss_curves,
    write_metrics,
    write_predictions,
)
from brickzoo.training._schedule import build_scheduler
from brickzoo.training._step import (
    BOXES_DROPPED,
    LossMeans,
    add_count,
    batch_size,
    boxes_dropped,
    check_loss_names,
    check_losses,
    loss_terms,
    require_named_batch,
    set_data_epoch,
    total_loss,
)

Batch = Mapping[str, Any]


@dataclass
class FitResult:
    """What :func:`fit` did.

    Attributes:
        history: one record per epoch, as in ``metrics.jsonl``: ``epoch``, ``step``, ``lr``,
            ``seconds``, ``train/<loss or metric>``, ``train/images_per_second``,
            ``train/boxes_dropped`` (when the batches count them) and ``val/<loss or metric>``
            (scalars only).
        final_metrics: the last epoch's record plus its non-scalar metrics (confusion matrices) as
            nested lists, as in ``final_metrics.json``.
        epochs_completed: epochs done, counting those of the run resumed.
        global_step: optimizer steps done, counting those of the run resumed.
        seconds: wall time of this call.
        run_dir: the run folder, if any.
        checkpoint: the last checkpoint folder written, if any.
    """

    history: list[dict[str, Any]]
    final_metrics: dict[str, Any]
    epochs_completed: int
    global_step: int
    seconds: float
    run_dir: Path | None = None
    checkpoint: Path | None = None


# -- small helpers ---------------------------------------------------------------------------------
def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` becomes ``cuda`` when available, else ``cpu``; asking for a missing GPU raises ConfigError."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r}, but torch sees no CUDA device; use 'auto' or 'cpu'")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators (CUDA's included)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with python's, numpy's and torch's generators seeded with ``seed``, then restore them.

    What the block draws depends on ``seed`` only; the caller's random streams go on as if it had not run.

    Example:
        >>> with seeded(0):
        ...     a = torch.rand(2)
        >>> with seeded(0):
        ...     b = torch.rand(2)
        >>> torch.equal(a, b)
        True
    """
    with preserved_rng():
        seed_everything(seed)
        yield


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 in hardware: a CUDA GPU from Ampere on, a CPU with
    AVX512-BF16 or AMX. Elsewhere bfloat16 is emulated, on CPUs without AVX512 many times slower
    than float32."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":  # private probes of torch.cpu: a torch without them counts as emulating
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)
    return False


def resolve_amp(amp: str, device: str | torch.device) -> str:
    """The autocast mode that ``amp`` (a :class:`TrainConfig` value) gives on ``device``.

    ``"auto"`` is ``"bf16"`` where the device computes bfloat16 in hardware (:func:`native_bf16`)
    and ``"none"`` (float32) elsewhere; the other values are returned as they are.

    Example:
        >>> resolve_amp("none", "cpu"), resolve_amp("fp16", "cpu")
        ('none', 'fp16')
    """
    if amp != "auto":
        return amp
    return "bf16" if native_bf16(resolve_device(device)) else "none"


def set_channels_last(collection: torch.nn.Module, channels_last: bool) -> None:
    """Give every 4-D parameter and buffer of ``collection`` the channels-last memory format, or
    return them to the default (contiguous) one. The tensors keep their identity (an optimizer
    built before still holds them); a convolution with channels-last weights writes channels-last
    outputs, so the whole network runs in that layout."""
    collection.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@contextlib.contextmanager
def channels_last_while(collection: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Run a block with ``collection`` in channels-last memory format when ``enabled``, and give the
    default layout back when it ends, also when it raises (a refused resume, a missing input, a
    diverged loss), so the caller's model never stays in the training layout."""
    if not enabled:
        yield
        return
    set_channels_last(collection, True)
    try:
        yield
    finally:
        set_channels_last(collection, False)


class _Precision:
    """Autocast, plus a gradient scaler for fp16, as ``amp`` (resolved by :func:`resolve_amp`) asks
    and the device allows."""

    def __init__(self, amp: str, device: torch.device) -> None:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(resolve_amp(amp, device))
        if dtype is torch.float16 and device.type != "cuda":
            warnings.warn(
                f"amp='fp16' needs a CUDA device; running in float32 on {device} instead "
                "(amp='bf16' also runs on the CPU)",
                stacklevel=3,
            )
            dtype = None
        self.device_type = device.type
        self.dtype = dtype
        self.scaler = torch.amp.GradScaler(device.type) if dtype is torch.float16 else None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def _move(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, list) and value and all(isinstance(v, torch.Tensor) for v in value):
        return [v.to(device, non_blocking=True) for v in value]
    return value


def _to_device(batch: Batch, device: torch.device) -> dict[str, Any]:
    return {name: _move(value, device) for name, value in batch.items()}


def _check_present(collection: BrickCollection, batch: Any, groups: Stage | frozenset[str], source: str) -> None:
    """Raise before anything runs if ``batch`` is not a dict or lacks a name the selection reads.

    Raises:
        DataError: the batch is not a dict of named tensors.
        MissingInputsError: the collection's one diagnostic, prefixed with ``source``.
    """
    require_named_batch(batch, source)
    collection.check_inputs_present(batch, groups, source=source)


def _check_training_setup(collection: BrickCollection, config: TrainConfig) -> list[str]:
    """The loss names; raises before anything runs if the collection cannot be trained as configured."""
    produced = set(collection.produced_outputs(Stage.TRAIN))
    loss_names = [name for name in collection.loss_names() if name in produced]
    if not loss_names:
        bricks = [path for path, _ in collection.named_bricks()]
        raise BrickDefinitionError(
            f"fit: the collection has no loss brick in the {Stage.TRAIN.value} selection "
            f"(groups {sorted(Stage.TRAIN.groups)}), so there is nothing to minimise; add a BrickLoss. "
            f"Bricks: {bricks}"
        )
    check_loss_names(loss_names, "fit")
    unknown = sorted(set(config.loss_weights) - set(loss_names))
    if unknown:
        raise ConfigError(
            f"TrainConfig.loss_weights names {unknown}, which are not losses; the losses are {loss_names}"
        )
    return loss_names


def _seed_epoch_order(loader: Any, seed: int, epoch: int) -> None:
    """Make the shuffled order (and worker seeds) of an epoch depend on (seed, epoch) only.

    A sampler with ``set_epoch`` (``DistributedSampler``) gets ``set_epoch(epoch)``. A
    ``RandomSampler``'s generator (one is given to it if it has none) and the loader's own
    generator, which seeds the workers, are re-seeded with ``seed * 100003 + epoch``.
    """
    epoch_seed = seed * 100_003 + epoch
    sampler = getattr(loader, "sampler", None)
    if callable(getattr(sampler, "set_epoch", None)):
        sampler.set_epoch(epoch)  # type: ignore[union-attr]
    elif isinstance(sampler, RandomSampler):
        if sampler.generator is None:
            sampler.generator = torch.Generator()
        sampler.generator.manual_seed(epoch_seed)
    generator = getattr(loader, "generator", None)
    if isinstance(generator, torch.Generator) and generator is not getattr(sampler, "generator", None):
        generator.manual_seed(epoch_seed)


def _steps_per_epoch(loader: Any, config: TrainConfig) -> int:
    """The optimizer steps of one epoch: the loader's length, capped by ``config.steps_per_epoch``.

    Raises:
        DataError: the loader yields no batch (with both sizes when ``drop_last`` dropped the only batch).
        ConfigError: the loader has no length and ``steps_per_epoch`` is not set.
    """
    if isinstance(loader, Sized):
        length = len(loader)
        if length == 0:
            raise DataError(_empty_loader_message(loader, "train_loader"))
        return min(length, config.steps_per_epoch) if config.steps_per_epoch else length
    if config.steps_per_epoch is None:
        raise ConfigError(
            f"train_loader ({type(loader).__name__}) has no length, so the schedule cannot be planned; "
            "set TrainConfig.steps_per_epoch"
        )
    return config.steps_per_epoch


def _empty_loader_message(loader: Any, source: str) -> str:
    dataset = getattr(loader, "dataset", None)
    size = len(dataset) if isinstance(dataset, Sized) else None
    batch = getattr(loader, "batch_size", None)
    if getattr(loader, "drop_last", False) and size and batch and size < batch:
        return (
            f"{source} yields no batch: its dataset has {size} samples, fewer than batch_size={batch}, and "
            "drop_last=True drops that incomplete batch; lower the batch size, add samples or set drop_last=False"
        )
    return f"{source} is empty: it yields no batch (dataset size {size}, batch_size {batch})"


def _first_batch(loader: Iterable[Any], what: str) -> Any:
    """The first batch of a loader, without changing any global random generator."""
    with preserved_rng():
        for batch in loader:
            return batch
    raise DataError(f"{what} is empty: it yields no batch")


def _prefixed(prefix: str, values: Mapping[str, Any]) -> dict[str, Any]:
    return {f"{prefix}/{name}": value for name, value in values.items()}


def _layout_line(trainer: _Trainer) -> str:
    """What ``amp`` and ``channels_last`` came to on the trainer's device, said once before training."""
    dtype = trainer.precision.dtype
    precision = f"{str(dtype).removeprefix('torch.')} autocast" if dtype is not None else "float32"
    layout = "channels-last" if trainer.config.channels_last else "default (contiguous)"
    return f"training on {trainer.device} in {precision} (amp {trainer.config.amp!r}), {layout} memory format"


def _summary_line(record: Mapping[str, Any], loss_names: Iterable[str]) -> str:
    """One readable line per epoch: lr, total losses, validation metrics, speed, boxes the transforms dropped.

    The single losses and the training metrics are left to ``metrics.jsonl``.
    """
    hidden = {"epoch", "step", *(f"{stage}/{name}" for stage in ("train", "val") for name in loss_names)}
    train_shown = {"train/loss", "train/images_per_second"}
    counts = {f"{stage}/{BOXES_DROPPED}" for stage in ("train", "val")}
    shown = ", ".join(
        f"{k} {v}" if k in counts else f"{k} {v:.4g}"
        for k, v in record.items()
        if k in counts
        or (k not in hidden and isinstance(v, float) and (not k.startswith("train/") or k in train_shown))
    )
    return f"epoch {record['epoch']} (step {record['step']}): {shown}"


# -- evaluation ------------------------------------------------------------------------------------
def evaluate(
    collection: BrickCollection,
    loader: Iterable[Batch],
    device: str | torch.device = "auto",
    stage: Stage | str = Stage.TEST,
    *,
    loss_weights: Mapping[str, float] | None = None,
    amp: str = "none",
    max_batches: int | None = None,
    quiet: bool = True,
) -> dict[str, Any]:
    """Run a stage's bricks over a loader in eval mode without gradients and summarize the metrics.

    The metrics are reset first and after, so earlier batches never mix in. The collection is
    moved to ``device`` and its train/eval mode is restored afterwards. The first batch runs
    through :meth:`~brickzoo.BrickCollection.check_batch`, which also checks the values of the
    targets (class indices in range, finite boxes...).

    Args:
        collection: the bricks.
        loader: yields dicts of named tensors holding what the stage's bricks read.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``... or a ``torch.device``.
        stage: the stage whose groups run (TEST: MODEL, LOSS and METRIC bricks).
        loss_weights: weights of the losses in the total ``loss`` (1 for names not given).
        amp: ``"none"`` | ``"auto"`` | ``"bf16"`` | ``"fp16"`` autocast (see :func:`resolve_amp`).
        max_batches: stop after this many batches.
        quiet: no progress bar.

    Returns:
        ``loss`` (the weighted total) and each loss by name, averaged over images, when the stage
        runs loss bricks; then every metric by name (``head0/accuracy``): numbers for scalars,
        nested lists for tensors such as confusion matrices; and ``boxes_dropped``, the boxes the
        loader's transforms dropped (e.g. too small after a letterbox), when its batches count them.

    Raises:
        MissingInputsError: the first batch lacks names the stage needs.
        BrickInputError: the first batch holds values the bricks refuse.
        DataError: the loader yields nothing.

    Example:
        >>> metrics = evaluate(collection, test_loader, stage=Stage.TEST)  # doctest: +SKIP
        >>> metrics["head0/accuracy"]  # doctest: +SKIP
        0.93
    """
    stage = Stage(stage)
    device = resolve_device(device)
    collection.to(device)
    precision = _Precision(amp, device)
    weights = dict(loss_weights or {})
    source = f"{stage.value.lower()} loader"
    means, batches, dropped = LossMeans(), 0, None
    was_training = collection.training
    collection.eval()
    collection.reset_metrics()
    try:
        with torch.no_grad():
            for index, raw in enumerate(tqdm(loader, desc=stage.value.lower(), disable=quiet, leave=False)):
                if max_batches is not None and index >= max_batches:
                    break
                if index == 0:
                    _check_present(collection, raw, stage, f"{source} (stage {stage.value})")
                dropped = add_count(dropped, boxes_dropped(raw))
                batch = _to_device(raw, device)
                with precision.autocast():
                    run = collection.check_batch if index == 0 else collection
                    outputs = run(batch, stage=stage)
                losses = collection.extract_losses(outputs)
                batches += 1
                if losses:
                    means.add(loss_terms(total_loss(losses, weights), losses), batch_size(batch) or 1)
    finally:
        collection.train(was_training)
    if batches == 0:
        collection.reset_metrics()
        raise DataError(f"evaluate: the {source} yielded no batch")
    results: dict[str, Any] = dict(means.means())
    results.update(to_python(collection.summarize(reset=True)))
    if dropped is not None:
        results[BOXES_DROPPED] = dropped
    return results


# -- training --------------------------------------------------------------------------------------
@dataclass
class _Trainer:
    """What one :func:`fit` call trains with: the collection, optimizer, schedule and step counter."""

    collection: BrickCollection
    config: TrainConfig
    device: torch.device
    optimizer: torch.optim.Optimizer
    scheduler: LambdaLR
    precision: _Precision
    steps_per_epoch: int
    global_step: int = 0

    def __post_init__(self) -> None:
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]

    @classmethod
    def create(cls, collection: BrickCollection, train_loader: Iterable[Batch], config: TrainConfig) -> _Trainer:
        """Freeze what ``config.freeze`` names, move the collection to the device, build optimizer and schedule."""
        device = resolve_device(config.device)
        if config.freeze:
            freeze(collection, config.freeze)
        collection.to(device)
        steps_per_epoch = _steps_per_epoch(train_loader, config)
        optimizer = build_optimizer(collection, config)
        return cls(
            collection=collection,
            config=config,
            device=device,
            optimizer=optimizer,
            scheduler=build_scheduler(optimizer, config, total_steps=steps_per_epoch * config.epochs),
            precision=_Precision(config.amp, device),
            steps_per_epoch=steps_per_epoch,
        )

    @property
    def lr(self) -> float:
        """The learning rate of the last step taken, for bricks without an lr multiplier."""
        return self.config.lr * self.scheduler.lr_lambdas[0](max(self.global_step - 1, 0))

    def step(self, batch: dict[str, Any], check: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One optimizer step on a batch already on the device; returns the total loss and each loss.

        With ``check``, the batch runs through :meth:`~brickzoo.BrickCollection.check_batch` (the
        value checks of the targets) and the losses' shapes and dtypes are checked.
        """
        with self.precision.autocast():
            run = self.collection.check_batch if check else self.collection
            outputs = run(batch, stage=Stage.TRAIN)  # MODEL + LOSS + METRIC bricks
            losses = self.collection.extract_losses(outputs)
            if check:
                check_losses(losses, "fit")
            total = total_loss(losses, self.config.loss_weights)
        self.optimizer.zero_grad(set_to_none=True)
        scaler = self.precision.scaler
        if scaler is not None:
            scaler.scale(total).backward()
            scaler.unscale_(self.optimizer)  # clip the true gradients
        else:
            total.backward()
        if self.config.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip_norm)
        if scaler is not None:
            scaler.step(self.optimizer)
            scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.global_step += 1
        return total, losses

    def train_epoch(self, loader: Iterable[Batch], epoch: int, bar: Any) -> dict[str, Any]:
        """Train one epoch (0-based ``epoch``); returns the mean losses, the train metrics, images/s and
        ``boxes_dropped`` (when the batches count them)."""
        started = time.perf_counter()
        self.collection.train()
        self.collection.reset_metrics()
        _seed_epoch_order(loader, self.config.seed, epoch)
        set_data_epoch(loader, epoch)  # the augmentations of (seed, index, epoch)
        means, dropped = LossMeans(), None
        for index, raw in enumerate(loader):
            if index >= self.steps_per_epoch:
                break
            if index == 0:
                _check_present(self.collection, raw, Stage.TRAIN, "train_loader (stage TRAIN)")
            dropped = add_count(dropped, boxes_dropped(raw))
            batch = _to_device(raw, self.device)
            total, losses = self.step(batch, check=index == 0)
            means.add(loss_terms(total, losses), batch_size(batch) or 1)
            if self.global_step % self.config.log_every == 0:
                loss = float(total.detach())
                if not math.isfinite(loss):
                    parts = {name: float(v.detach()) for name, v in losses.items()}
                    raise BrickRuntimeError(
                        f"the training loss became {loss} at epoch {epoch + 1}, step {self.global_step} "
                        f"(losses {parts}); lower the lr, clip gradients or check the data"
                    )
                speed = means.images / max(time.perf_counter() - started, 1e-9)
                bar.set_postfix(loss=f"{loss:.4g}", img_s=f"{speed:.1f}", refresh=False)
            bar.update(1)
        results: dict[str, Any] = dict(means.means())
        results.update(to_python(self.collection.summarize(reset=True)))
        results["images_per_second"] = means.images / max(time.perf_counter() - started, 1e-9)
        if dropped is not None:
            results[BOXES_DROPPED] = dropped
        return results

    def run_epoch(
        self, train_loader: Iterable[Batch], val_loader: Iterable[Batch] | None, epoch: int, bar: Any, quiet: bool
    ) -> dict[str, Any]:
        """Train epoch ``epoch`` (0-based) and validate; returns its full record (non-scalar metrics too)."""
        started = time.perf_counter()
        train = self.train_epoch(train_loader, epoch, bar)
        record: dict[str, Any] = {"epoch": epoch + 1, "step": self.global_step, "lr": self.lr}
        record.update(_prefixed("train", train))
        if val_loader is not None:
            config = self.config
            val = evaluate(
                self.collection,
                val_loader,
                self.device,
                Stage.VALIDATION,
                loss_weights=config.loss_weights,
                amp=config.amp,
                quiet=quiet,
            )
            record.update(_prefixed("val", val))
        record["seconds"] = time.perf_counter() - started
        return record

    def state(self, epoch: int) -> dict[str, Any]:
        """Everything beyond the weights that an exact resume needs (all readable with weights_only=True)."""
        return {
            "epoch": epoch,
            "global_step": self.global_step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.precision.scaler.state_dict() if self.precision.scaler is not None else {},
            "rng": capture_rng_state(),
            "data_seed": self.config.seed,
            "steps_per_epoch": self.steps_per_epoch,
            "config": self.config.to_dict(),
        }

    def start(self, run: Path | None, resume: bool) -> tuple[int, list[dict[str, Any]], Path | None]:
        """Resume from ``run``'s checkpoint, or seed a fresh start; returns (epochs done, history, checkpoint).

        Raises:
            WeightsError: ``resume`` without a complete checkpoint in ``run``.
            ConfigError: a fresh start in a run folder that holds a checkpoint.
        """
        if resume:
            checkpoint = find_checkpoint(run) if run is not None else None
            if checkpoint is None:
                raise WeightsError(
                    "fit: resume=True needs a run_dir holding a complete checkpoint (checkpoint/trainer_state.pt); "
                    f"got run_dir={str(run) if run is not None else None!r}"
                )
            epoch = self.resume(checkpoint)
            return epoch, read_metrics(checkpoint.parent, last_epoch=epoch), checkpoint  # drop later epochs
        if run is not None and find_checkpoint(run) is not None:
            raise ConfigError(
                f"fit: {run} already holds a checkpoint; pass resume=True to continue it, or choose a new run_dir"
            )
        seed_everything(self.config.seed)
        return 0, [], None

    def resume(self, checkpoint: Path) -> int:
        """Load a checkpoint's weights, optimizer, schedule, counters and RNG states; return its epoch."""
        state = load_trainer_state(checkpoint)
        self.collection.load_bricks(checkpoint, strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.precision.scaler is not None and state.get("scaler"):
            self.precision.scaler.load_state_dict(state["scaler"])
        then, now = state["config"], self.config.to_dict()
        changed = {key: (value, then.get(key)) for key, value in now.items() if then.get(key) != value}
        if changed or state.get("steps_per_epoch") != self.steps_per_epoch:
            warnings.warn(
                f"resuming {checkpoint} with other settings than it was trained with ({{key: (now, then)}}): "
                f"{changed}; steps per epoch now {self.steps_per_epoch}, then {state.get('steps_per_epoch')}",
                stacklevel=3,
            )
        self.global_step = int(state["global_step"])
        restore_rng_state(state["rng"])
        return int(state["epoch"])


def _check_first_batches(
    collection: BrickCollection, train_loader: Iterable[Batch], val_loader: Iterable[Batch] | None, draw: bool
) -> Batch | None:
    """Check, before the first step, the first validation batch and the batch drawn to ``predictions.png``.

    Returns the batch to draw (the first validation batch, else the first training batch), or None.
    The training batches are checked as they come.
    """
    preview = None
    if val_loader is not None:
        preview = _first_batch(val_loader, "val_loader")
        _check_present(collection, preview, Stage.VALIDATION, "val_loader (stage VALIDATION)")
    if draw:
        preview = preview if preview is not None else _first_batch(train_loader, "train_loader")
        _check_present(collection, preview, VISUALIZATION_GROUPS, "the first batch drawn to predictions.png")
    return preview


@dataclass
class _Epochs:
    """The epochs of one :func:`fit` call and what they wrote."""

    trainer: _Trainer
    run: Path | None
    loss_names: list[str]
    history: list[dict[str, Any]]
    checkpoint: Path | None
    quiet: bool

    def run_until(
        self, train_loader: Iterable[Batch], val_loader: Iterable[Batch] | None, epoch: int, end_epoch: int
    ) -> tuple[int, dict[str, Any]]:
        """Train and validate epochs ``epoch .. end_epoch - 1``; returns the epochs done and the last full record.

        Each epoch appends its record to ``history`` (and ``metrics.jsonl``); checkpoints are written
        every ``checkpoint_every_epochs`` and after the last epoch.
        """
        trainer, config, run = self.trainer, self.trainer.config, self.run
        last: dict[str, Any] = dict(self.history[-1]) if self.history else {}
        total_steps = trainer.steps_per_epoch * config.epochs
        bar = tqdm(total=total_steps, initial=trainer.global_step, disable=self.quiet, unit="step", dynamic_ncols=True)
        try:
            while epoch < end_epoch:
                bar.set_description(f"epoch {epoch + 1}/{config.epochs}")
                last = trainer.run_epoch(train_loader, val_loader, epoch, bar, self.quiet)
                epoch += 1
                self.history.append(scalars(last))
                if not self.quiet:
                    tqdm.write(_summary_line(self.history[-1], self.loss_names))
                if run is not None:
                    write_metrics(run, self.history)
                    every = config.checkpoint_every_epochs
                    if epoch == end_epoch or (every and epoch % every == 0):
                        self.checkpoint = save_checkpoint(run, trainer.collection, trainer.state(epoch))
        except KeyboardInterrupt:
            if not self.quiet:
                where = find_checkpoint(run) if run is not None else None
                tqdm.write(f"interrupted in epoch {epoch + 1}; the last complete checkpoint is {where}")
            raise
        finally:
            bar.close()
        return epoch, last


def fit(
    collection: BrickCollection,
    train_loader: Iterable[Batch],
    val_loader: Iterable[Batch] | None = None,
    config: TrainConfig | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    *,
    stop_after_epoch: int | None = None,
    quiet: bool = False,
) -> FitResult:
    """Train a collection's MODEL bricks on its losses; validate each epoch; write a run folder.

    Before the first step, it checks that the collection has loss bricks, that the loss weights
    name losses, and that the batches hold every name the TRAIN (and VALIDATION) selection reads.
    The first batch of every epoch (and of every validation) runs through
    :meth:`~brickzoo.BrickCollection.check_batch`, which checks the target values too. Each epoch
    then trains (train metrics reset at its start), validates with :func:`evaluate` under the
    VALIDATION stage, appends a record to ``metrics.jsonl`` and, every ``checkpoint_every_epochs``,
    writes an atomic checkpoint.

    The data order of epoch ``e`` depends only on ``config.seed`` and ``e``: the train loader's
    ``RandomSampler`` generator and its own generator (worker seeds) are re-seeded with
    ``seed * 100003 + e`` (a sampler with ``set_epoch``, like ``DistributedSampler``, gets
    ``set_epoch(e)``), and so do its augmentations: every dataset of the train loader with a
    ``set_epoch`` (a :class:`~brickzoo.data.transforms.TransformedDataset`, also inside a
    ``Subset`` or ``ConcatDataset``) gets ``set_epoch(e)`` before the epoch's batches are drawn.
    With the RNG states saved in the checkpoint, ``resume=True`` continues exactly where the
    checkpoint left off: on the CPU with a fixed number of threads, 2 epochs + 2 resumed epochs
    give the same weights as 4 in a row. The validation datasets are left at their epoch, so
    every validation sees the same samples. ``train/boxes_dropped`` (and ``val/boxes_dropped``)
    count per epoch the boxes the transforms dropped, when the batches carry ``boxes_dropped``.

    Args:
        collection: the bricks; trained in place and moved to the config's device.
        train_loader: yields dicts of named tensors (``{"images": ..., "labels": ...}``).
        val_loader: the same for validation; None skips validation.
        config: the settings; ``TrainConfig()`` by default. ``config.freeze`` is applied to the
            collection (see :func:`~brickzoo.training.freeze`).
        run_dir: the run folder to write (see :mod:`brickzoo.training`); None writes nothing.
        resume: continue from the last checkpoint of ``run_dir``.
        stop_after_epoch: stop once this many epochs are done (with a checkpoint), although the
            schedule still spans ``config.epochs``; a later ``resume=True`` continues the same run.
        quiet: no progress bar and no epoch lines.

    Returns:
        A :class:`FitResult`.

    Raises:
        BrickDefinitionError: the collection has no loss brick.
        MissingInputsError: the batches lack names the TRAIN/VALIDATION selections (or, with a
            run folder, the visualizations) read.
        BrickInputError: a first batch holds values the bricks refuse (a class index out of range...).
        DataError: the batches are not dicts, or the train loader yields no batch.
        ConfigError: bad settings, or ``run_dir`` holds a checkpoint and ``resume`` is False.
        WeightsError: ``resume=True`` but ``run_dir`` has no checkpoint.
        KeyboardInterrupt: re-raised after Ctrl-C; the last complete checkpoint stays intact.

    Example:
        >>> config = TrainConfig(epochs=5, lr=1e-3, warmup_fraction=0.1)
        >>> result = fit(collection, train_loader, val_loader, config, run_dir="runs/a")  # doctest: +SKIP
        >>> result.final_metrics["val/head0/accuracy"]  # doctest: +SKIP
        0.91
    """
    started = time.perf_counter()
    config = config or TrainConfig()
    run = Path(run_dir) if run_dir is not None else None
    loss_names = _check_training_setup(collection, config)
    with channels_last_while(collection, config.channels_last):
        trainer = _Trainer.create(collection, train_loader, config)
        epoch, history, checkpoint = trainer.start(run, resume)
        draw = run is not None and has_visualizations(collection)
        preview = _check_first_batches(collection, train_loader, val_loader, draw)
        if run is not None:
            run.mkdir(parents=True, exist_ok=True)
            write_config(run, config.to_dict(), TRAIN_CONFIG_FILE)
            write_graph(run, collection)
        if not quiet and (config.amp == "auto" or config.channels_last):
            tqdm.write(_layout_line(trainer))
        epochs = _Epochs(trainer, run, loss_names, history, checkpoint, quiet)
        end_epoch = config.epochs if stop_after_epoch is None else min(config.epochs, stop_after_epoch)
        epoch, last = epochs.run_until(train_loader, val_loader, epoch, end_epoch)
    final = {**last, "seconds_total": time.perf_counter() - started}
    if run is not None:
        write_final_metrics(run, final)
        write_loss_curves(run, history, loss_names)
        if draw and preview is not None:
            write_predictions(run, collection, _to_device(preview, trainer.device))
    return FitResult(
        history=history,
        final_metrics=final,
        epochs_completed=epoch,
        global_step=trainer.global_step,
        seconds=time.perf_counter() - started,
        run_dir=run,
        checkpoint=epochs.checkpoint,
    )
