"""TrainConfig: every setting of :func:`brickzoo.training.fit`, with its default explained."""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from brickzoo.errors import ConfigError

OPTIMIZERS = ("adamw", "adam", "sgd")
AMP_MODES = ("none", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    """How :func:`~brickzoo.training.fit` trains a collection.

    Every problem with the values is reported at once, as one :class:`ConfigError`, when the
    config is created. Build one from a YAML mapping with :meth:`from_dict`.

    Example:
        >>> config = TrainConfig(epochs=2, lr=3e-4, warmup_fraction=0.1, loss_weights={"head0/loss": 2.0})
        >>> config.optimizer
        'adamw'
    """

    # -- length ---------------------------------------------------------------------------------
    epochs: int = 10  # passes over the training loader
    steps_per_epoch: int | None = None  # None: len(train_loader); set it for loaders without a length

    # -- optimizer --------------------------------------------------------------------------------
    optimizer: str = "adamw"  # "adamw" | "adam" | "sgd"
    lr: float = 1e-3  # peak learning rate, reached at the end of the warm-up
    weight_decay: float = 0.05  # decoupled for adamw; 1-D tensors (biases, norm weights) never decay
    momentum: float = 0.9  # sgd only (Nesterov off)
    betas: tuple[float, float] = (0.9, 0.999)  # adam/adamw only

    # -- schedule: linear warm-up from lr/warmup to lr, then cosine down to min_lr ------------
    warmup_steps: int = 0  # optimizer steps of linear warm-up...
    warmup_fraction: float = 0.0  # ...or a fraction of all steps (give one of the two)
    min_lr: float = 0.0  # the cosine ends here on the last step (lr_multipliers scale it too)

    # -- per step ---------------------------------------------------------------------------------
    grad_clip_norm: float | None = 1.0  # clip the global gradient norm to this; None: no clipping
    loss_weights: dict[str, float] = field(default_factory=dict)  # {loss name: weight}; others weigh 1
    amp: str = "none"  # "none" | "bf16" | "fp16" mixed precision; CUDA only except bf16, which runs on CPU too

    # -- fine-tuning ------------------------------------------------------------------------------
    freeze: list[str] = field(default_factory=list)  # brick path patterns to freeze, see freeze()
    lr_multipliers: dict[str, float] = field(default_factory=dict)  # {brick path pattern: lr factor}

    # -- run ------------------------------------------------------------------------------------
    device: str = "auto"  # "auto" (cuda when available) | "cpu" | "cuda"
    seed: int = 0  # seeds torch/numpy/python at the start and the data order of every epoch
    log_every: int = 10  # steps between progress-bar updates (each costs a device sync)
    checkpoint_every_epochs: int = 1  # 0: only the final checkpoint (needs a run_dir)

    def __post_init__(self) -> None:
        self.betas = (float(self.betas[0]), float(self.betas[1])) if _pair(self.betas) else self.betas
        self.loss_weights = dict(self.loss_weights)
        self.lr_multipliers = dict(self.lr_multipliers)
        self.freeze = [self.freeze] if isinstance(self.freeze, str) else list(self.freeze)
        problems = self._problems()
        if problems:
            raise ConfigError("TrainConfig: " + "; ".join(problems))

    def _problems(self) -> list[str]:
        problems: list[str] = []

        def check(ok: bool, message: str) -> None:
            if not ok:
                problems.append(message)

        check(_int(self.epochs) and self.epochs >= 1, f"epochs must be an integer >= 1, got {self.epochs!r}")
        check(
            self.steps_per_epoch is None or (_int(self.steps_per_epoch) and self.steps_per_epoch >= 1),
            f"steps_per_epoch must be None or an integer >= 1, got {self.steps_per_epoch!r}",
        )
        check(self.optimizer in OPTIMIZERS, f"optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        check(_number(self.lr) and self.lr > 0, f"lr must be a number > 0, got {self.lr!r}")
        check(
            _number(self.min_lr) and 0 <= self.min_lr <= (self.lr if _number(self.lr) else math.inf),
            f"min_lr must be a number in [0, lr={self.lr!r}], got {self.min_lr!r}",
        )
        check(
            _number(self.weight_decay) and self.weight_decay >= 0,
            f"weight_decay must be >= 0, got {self.weight_decay!r}",
        )
        check(_number(self.momentum) and 0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum!r}")
        check(
            _pair(self.betas) and all(0 <= b < 1 for b in self.betas),
            f"betas must be two numbers in [0, 1), got {self.betas!r}",
        )
        check(
            _int(self.warmup_steps) and self.warmup_steps >= 0,
            f"warmup_steps must be an integer >= 0, got {self.warmup_steps!r}",
        )
        check(
            _number(self.warmup_fraction) and 0 <= self.warmup_fraction < 1,
            f"warmup_fraction must be in [0, 1), got {self.warmup_fraction!r}",
        )
        if self.warmup_steps and self.warmup_fraction:
            problems.append(
                f"give warmup_steps ({self.warmup_steps}) or warmup_fraction ({self.warmup_fraction}), not both"
            )
        check(
            self.grad_clip_norm is None or (_number(self.grad_clip_norm) and self.grad_clip_norm > 0),
            f"grad_clip_norm must be None or a number > 0, got {self.grad_clip_norm!r}",
        )
        check(self.amp in AMP_MODES, f"amp must be one of {list(AMP_MODES)}, got {self.amp!r}")
        check(self.device in DEVICES, f"device must be one of {list(DEVICES)}, got {self.device!r}")
        check(_int(self.seed) and self.seed >= 0, f"seed must be an integer >= 0, got {self.seed!r}")
        check(
            _int(self.log_every) and self.log_every >= 1, f"log_every must be an integer >= 1, got {self.log_every!r}"
        )
        check(
            _int(self.checkpoint_every_epochs) and self.checkpoint_every_epochs >= 0,
            f"checkpoint_every_epochs must be an integer >= 0, got {self.checkpoint_every_epochs!r}",
        )
        bad = {k: v for k, v in self.loss_weights.items() if not isinstance(k, str) or not _number(v) or v < 0}
        check(not bad, f"loss_weights must map loss names to numbers >= 0, got {bad}")
        bad = {k: v for k, v in self.lr_multipliers.items() if not isinstance(k, str) or not _number(v) or v < 0}
        check(not bad, f"lr_multipliers must map brick path patterns to numbers >= 0, got {bad}")
        bad_patterns = [p for p in self.freeze if not isinstance(p, str) or not p]
        check(not bad_patterns, f"freeze must be a list of brick path patterns, got {self.freeze!r}")
        return problems

    # -- conversion ---------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build a config from a mapping (a YAML section); unknown keys raise with close matches."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in values if k not in known]
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ConfigError(f"TrainConfig: unknown keys {', '.join(hints)}; expected some of {known}")
        data = dict(values)
        if "betas" in data and isinstance(data["betas"], list):
            data["betas"] = tuple(data["betas"])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return data


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _pair(value: object) -> bool:
    return isinstance(value, (tuple, list)) and len(value) == 2 and all(_number(v) for v in value)
