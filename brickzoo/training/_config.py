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
AMP_MODES = ("none", "auto", "bf16", "fp16")
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
    amp: str = "none"  # "none" | "auto" | "bf16" | "fp16" mixed precision, see resolve_amp()
    channels_last: bool = False  # train and validate with 4-D weights in channels-last memory format

    # -- fine-tuning ------------------------------------------------------------------------------
    freeze: list[str] = field(default_factory=list)  # brick path patterns to freeze, see freeze()
    lr_multipliers: dict[str, float] = field(default_factory=dict)  # {brick path pattern: lr factor}

    # -- run ------------------------------------------------------------------------------------
    device: str = "auto"  # "auto" (cuda when available) | "cpu" | "cuda"
    seed: int = 0  # seeds a zoo recipe's initial weights, torch/numpy/python at the start, each epoch's data order
    log_every: int = 10  # steps between progress-bar updates (each costs a device sync)
    checkpoint_every_epochs: int = 1  # 0: only the final checkpoint (needs a run_dir)

    def __post_init__(self) -> None:
        for name, value in _normalised(vars(self)).items():
            setattr(self, name, value)
        problems = _value_problems(vars(self))
        if problems:
            raise ConfigError("TrainConfig: " + "; ".join(problems))

    @classmethod
    def value_problems(cls, values: Mapping[str, Any]) -> list[str]:
        """Every problem of the settings ``values`` (known field names; the others default), without raising.

        Example:
            >>> TrainConfig.value_problems({"epochs": 0, "lr": 1e-3})
            ['epochs must be an integer >= 1, got 0']
        """
        defaults = {f.name: getattr(cls(), f.name) for f in dataclasses.fields(cls)}
        return _value_problems({**defaults, **_normalised(values)})

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
        return cls(**values)

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


def _normalised(values: Mapping[str, Any]) -> dict[str, Any]:
    """The values as the fields hold them: ``betas`` a tuple, ``freeze`` a list, mappings copied (others as given)."""
    data = dict(values)
    if _pair(data.get("betas")):
        data["betas"] = (float(data["betas"][0]), float(data["betas"][1]))
    for key in ("loss_weights", "lr_multipliers"):
        if isinstance(data.get(key), Mapping):
            data[key] = dict(data[key])
    freeze = data.get("freeze")
    if isinstance(freeze, str):
        data["freeze"] = [freeze]
    elif isinstance(freeze, (list, tuple)):
        data["freeze"] = list(freeze)
    return data


def _value_problems(v: Mapping[str, Any]) -> list[str]:
    """The problems of a full set of :class:`TrainConfig` values, one message each."""
    problems: list[str] = []

    def check(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    check(_int(v["epochs"]) and v["epochs"] >= 1, f"epochs must be an integer >= 1, got {v['epochs']!r}")
    steps = v["steps_per_epoch"]
    check(
        steps is None or (_int(steps) and steps >= 1), f"steps_per_epoch must be None or an integer >= 1, got {steps!r}"
    )
    check(v["optimizer"] in OPTIMIZERS, f"optimizer must be one of {list(OPTIMIZERS)}, got {v['optimizer']!r}")
    check(_number(v["lr"]) and v["lr"] > 0, f"lr must be a number > 0, got {v['lr']!r}")
    check(
        _number(v["min_lr"]) and 0 <= v["min_lr"] <= (v["lr"] if _number(v["lr"]) else math.inf),
        f"min_lr must be a number in [0, lr={v['lr']!r}], got {v['min_lr']!r}",
    )
    check(
        _number(v["weight_decay"]) and v["weight_decay"] >= 0, f"weight_decay must be >= 0, got {v['weight_decay']!r}"
    )
    check(_number(v["momentum"]) and 0 <= v["momentum"] < 1, f"momentum must be in [0, 1), got {v['momentum']!r}")
    check(
        _pair(v["betas"]) and all(0 <= b < 1 for b in v["betas"]),
        f"betas must be two numbers in [0, 1), got {v['betas']!r}",
    )
    warmup, fraction = v["warmup_steps"], v["warmup_fraction"]
    check(_int(warmup) and warmup >= 0, f"warmup_steps must be an integer >= 0, got {warmup!r}")
    check(_number(fraction) and 0 <= fraction < 1, f"warmup_fraction must be in [0, 1), got {fraction!r}")
    check(not (warmup and fraction), f"give warmup_steps ({warmup}) or warmup_fraction ({fraction}), not both")
    clip = v["grad_clip_norm"]
    check(clip is None or (_number(clip) and clip > 0), f"grad_clip_norm must be None or a number > 0, got {clip!r}")
    check(v["amp"] in AMP_MODES, f"amp must be one of {list(AMP_MODES)}, got {v['amp']!r}")
    check(isinstance(v["channels_last"], bool), f"channels_last must be true or false, got {v['channels_last']!r}")
    check(v["device"] in DEVICES, f"device must be one of {list(DEVICES)}, got {v['device']!r}")
    check(_int(v["seed"]) and v["seed"] >= 0, f"seed must be an integer >= 0, got {v['seed']!r}")
    check(_int(v["log_every"]) and v["log_every"] >= 1, f"log_every must be an integer >= 1, got {v['log_every']!r}")
    every = v["checkpoint_every_epochs"]
    check(_int(every) and every >= 0, f"checkpoint_every_epochs must be an integer >= 0, got {every!r}")
    for key, what in (("loss_weights", "loss names"), ("lr_multipliers", "brick path patterns")):
        bad = _bad_weights(v[key])
        check(bad is None, f"{key} must map {what} to numbers >= 0, got {bad}")
    freeze = v["freeze"]
    check(
        isinstance(freeze, list) and all(isinstance(p, str) and p for p in freeze),
        f"freeze must be a list of brick path patterns, got {freeze!r}",
    )
    return problems


def _bad_weights(value: object) -> str | None:
    """What is wrong in a ``{name: number >= 0}`` mapping (its bad entries, or the whole value), None if nothing."""
    if not isinstance(value, dict):
        return f"{type(value).__name__} {value!r}"
    bad = {k: w for k, w in value.items() if not isinstance(k, str) or not _number(w) or w < 0}
    return repr(bad) if bad else None
