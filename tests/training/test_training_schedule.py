"""TrainConfig validation and the warm-up + cosine schedule, against hand computations."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from training_toys import loader, toy_collection

from brickzoo.errors import ConfigError
from brickzoo.training import TrainConfig, build_scheduler, fit, lr_factor


def test_config_reports_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig(epochs=0, lr=-1.0, optimizer="adamx", amp="fp8", warmup_steps=2, warmup_fraction=0.1)
    message = str(info.value)
    for part in ("epochs must be", "lr must be", "optimizer must be one of", "amp must be one of", "not both"):
        assert part in message, part


def test_config_from_dict_suggests_close_keys_and_round_trips() -> None:
    with pytest.raises(ConfigError, match=r"unknown keys 'learning_rate', 'epoch' \(did you mean 'epochs'\?\)"):
        TrainConfig.from_dict({"learning_rate": 0.1, "epoch": 3})
    config = TrainConfig.from_dict({"epochs": 3, "betas": [0.8, 0.9], "freeze": "backbone"})
    assert config.betas == (0.8, 0.9) and config.freeze == ["backbone"]
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_schedule_values_match_a_hand_computation() -> None:
    # 10 steps, 3 of warm-up, peak 1.0, min 0.1: warm-up 1/3, 2/3, 1; then a cosine over steps 3..9
    config = TrainConfig(lr=1.0, min_lr=0.1, warmup_steps=3)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    scheduler = build_scheduler(optimizer, config, total_steps=10)
    seen = []
    for _ in range(10):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    cosine = [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / 6)) for k in range(7)]
    expected = [1 / 3, 2 / 3, 1.0, *cosine]
    assert seen == pytest.approx(expected, abs=1e-12)
    assert seen[3] == pytest.approx(1.0) and seen[6] == pytest.approx(0.55) and seen[-1] == pytest.approx(0.1)


@settings(max_examples=25, deadline=None)
@given(total=st.integers(1, 60), warmup=st.integers(0, 60), min_ratio=st.floats(0.0, 1.0))
def test_schedule_is_bounded_rises_then_falls(total: int, warmup: int, min_ratio: float) -> None:
    warmup = min(warmup, total)
    values = [lr_factor(step, total, warmup, min_ratio) for step in range(total)]
    assert all(0.0 < v <= 1.0 + 1e-12 for v in values[:warmup])
    assert all(min_ratio - 1e-12 <= v <= 1.0 + 1e-12 for v in values[warmup:])
    assert all(a <= b + 1e-12 for a, b in itertools.pairwise(values[:warmup]))  # warm-up rises
    assert all(a + 1e-12 >= b for a, b in itertools.pairwise(values[warmup:]))  # then falls
    if total - warmup >= 2:
        assert values[-1] == pytest.approx(min_ratio) and values[warmup] == pytest.approx(1.0)
    if warmup:
        assert values[0] == pytest.approx(1 / warmup)


def test_fit_logs_the_schedule_and_scales_every_param_group() -> None:
    # 4 epochs of 2 steps, warm-up 25 % (2 steps); lr_multipliers put the backbone at a tenth of the head
    config = TrainConfig(
        epochs=4, lr=0.2, min_lr=0.02, warmup_fraction=0.25, device="cpu", lr_multipliers={"backbone": 0.1}
    )
    result = fit(toy_collection(), loader(32, batch_size=16), config=config, quiet=True)
    total, warmup = 8, 2
    hand = [0.2 * lr_factor(step, total, warmup, 0.1) for step in range(total)]
    logged = [record["lr"] for record in result.history]  # the lr of each epoch's last step
    assert logged == pytest.approx([hand[1], hand[3], hand[5], hand[7]])
    assert logged[0] == pytest.approx(0.2) and logged[-1] == pytest.approx(0.02)
