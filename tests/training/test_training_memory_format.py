"""fit()'s ``channels_last`` and ``amp="auto"``: the same training as the default layout and float32 up to
rounding, the layout and precision each run takes, and the layout given back when fit ends."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from training_toys import RenamingLoader, loader, toy_collection, weights

from brickzoo.bag_of_bricks.object_detection import ContiguousGroupNorm
from brickzoo.errors import BrickRuntimeError, ConfigError, MissingInputsError, WeightsError
from brickzoo.training import TrainConfig, _loop, fit, native_bf16, resolve_amp, set_channels_last

CL = torch.channels_last


def quick(**overrides: object) -> TrainConfig:
    values: dict[str, object] = {"epochs": 2, "lr": 1e-2, "device": "cpu", "log_every": 1}
    values.update(overrides)
    return TrainConfig(**values)  # type: ignore[arg-type]


def four_d(collection: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in collection.state_dict().items() if v.ndim == 4}


def record_convs(collection: nn.Module) -> list[tuple[bool, bool, torch.dtype]]:
    """Per training forward of every Conv2d: (weight channels-last, output channels-last, output dtype)."""
    seen: list[tuple[bool, bool, torch.dtype]] = []

    def hook(module: nn.Module, _: Any, output: torch.Tensor) -> None:
        if module.training:
            weight = module.weight  # type: ignore[union-attr]
            seen.append((is_cl(weight), is_cl(output), output.dtype))

    for module in collection.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_hook(hook)
    return seen


def is_cl(tensor: torch.Tensor) -> bool:
    """Channels-last and not also contiguous (a tensor with one channel or a 1x1 map is both)."""
    return tensor.is_contiguous(memory_format=CL) and not tensor.is_contiguous()


def test_channels_last_trains_like_the_default_layout_and_gives_the_layout_back() -> None:
    # SGD: the conv's bias (followed by BatchNorm) has a gradient of rounding noise only, which AdamW's
    # normalised step would turn into full steps of either sign
    reference, candidate = toy_collection(), toy_collection()
    fit(reference, loader(32), config=quick(optimizer="sgd"), quiet=True)
    seen = record_convs(candidate)
    result = fit(candidate, loader(32), config=quick(optimizer="sgd", channels_last=True), quiet=True)
    assert result.global_step == 4
    assert seen and all(weight and output for weight, output, _ in seen)  # every training conv ran channels-last
    for name, value in weights(candidate).items():  # the same 4 steps, up to the convolution's rounding
        torch.testing.assert_close(value, weights(reference)[name], rtol=1e-4, atol=1e-5)
    assert four_d(candidate) and all(v.is_contiguous() for v in four_d(candidate).values())


@pytest.mark.parametrize("failure", ["diverged loss", "resume without checkpoint", "missing input"])
def test_channels_last_gives_the_layout_back_when_fit_fails(tmp_path: Path, failure: str) -> None:
    """Before the first step (a refused resume, a batch lacking a name) or during training (inf loss)."""
    collection = toy_collection()
    settings = quick(channels_last=True)
    train: Any = loader(64)
    expected: type[Exception] = BrickRuntimeError
    if failure == "diverged loss":
        settings = quick(channels_last=True, lr=1e6, grad_clip_norm=None)
    elif failure == "resume without checkpoint":
        expected = WeightsError
    else:
        train = RenamingLoader(loader(32), {"labels": "targets"})
        expected = MissingInputsError
    resume = failure.startswith("resume")
    with pytest.raises(expected):
        fit(collection, train, config=settings, run_dir=tmp_path / "run", resume=resume, quiet=True)
    assert four_d(collection) and all(v.is_contiguous() for v in four_d(collection).values())


def test_set_channels_last_keeps_the_parameters_an_optimizer_holds() -> None:
    collection = toy_collection()
    before = dict(collection.named_parameters())
    set_channels_last(collection, True)
    conv = next(p for p in collection.parameters() if p.ndim == 4)
    assert is_cl(conv)
    assert all(p is before[name] for name, p in collection.named_parameters())
    set_channels_last(collection, False)
    assert conv.is_contiguous()


@pytest.mark.parametrize("native", [True, False])
def test_amp_auto_is_bf16_only_where_the_device_computes_it(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(_loop, "native_bf16", lambda device: native)
    assert resolve_amp("auto", "cpu") == ("bf16" if native else "none")
    for amp in ("none", "bf16", "fp16"):
        assert resolve_amp(amp, "cpu") == amp  # what the user named is kept
    collection = toy_collection()
    seen = record_convs(collection)
    result = fit(collection, loader(32), config=quick(amp="auto", epochs=1), quiet=True)
    assert math.isfinite(result.history[0]["train/loss"])
    assert {dtype for _, _, dtype in seen} == {torch.bfloat16 if native else torch.float32}
    assert all(v.dtype == torch.float32 for v in weights(collection).values() if v.is_floating_point())


def test_native_bf16_reads_the_cpu_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    flags = {"_is_avx512_bf16_supported": False, "_is_amx_tile_supported": False}
    for name in flags:
        monkeypatch.setattr(torch.cpu, name, lambda name=name: flags[name])
    assert native_bf16(torch.device("cpu")) is False
    flags["_is_amx_tile_supported"] = True
    assert native_bf16(torch.device("cpu")) is True
    flags.update(_is_amx_tile_supported=False, _is_avx512_bf16_supported=True)
    assert native_bf16(torch.device("cpu")) is True
    assert native_bf16(torch.device("meta")) is False


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_channels_last_must_be_a_bool(value: object) -> None:
    with pytest.raises(ConfigError, match=f"channels_last must be true or false, got {value!r}"):
        TrainConfig(channels_last=value)  # type: ignore[arg-type]


def test_amp_names_the_modes_it_accepts() -> None:
    with pytest.raises(ConfigError, match=r"amp must be one of \['none', 'auto', 'bf16', 'fp16'\], got 'bf8'"):
        TrainConfig(amp="bf8")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_contiguous_group_norm_equals_group_norm_on_a_channels_last_map(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    reference = nn.GroupNorm(4, 8)
    nn.init.normal_(reference.weight)
    nn.init.normal_(reference.bias)
    norm = ContiguousGroupNorm(4, 8)
    norm.load_state_dict(reference.state_dict())
    assert list(norm.state_dict()) == list(reference.state_dict())  # the same weights file as nn.GroupNorm
    x = torch.randn(3, 8, 5, 6, dtype=dtype)
    grad = torch.randn_like(x)
    outputs = []
    for module, layout in ((reference, torch.contiguous_format), (norm, CL)):
        module.to(dtype)
        module.zero_grad()
        leaf = x.clone().contiguous(memory_format=layout).requires_grad_(True)
        out = module(leaf)
        out.backward(grad)
        outputs.append((out, leaf.grad, module.weight.grad, module.bias.grad))
    (out, *grads), (cl_out, *cl_grads) = outputs
    assert cl_out.is_contiguous()
    tolerance = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    torch.testing.assert_close(cl_out, out, **tolerance)
    for got, expected in zip(cl_grads, grads, strict=True):
        torch.testing.assert_close(got, expected, **tolerance)


def test_fit_says_what_amp_auto_and_channels_last_came_to(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_loop, "native_bf16", lambda device: False)
    fit(toy_collection(), loader(16), config=quick(amp="auto", channels_last=True, epochs=1))
    assert "training on cpu in float32 (amp 'auto'), channels-last memory format" in capsys.readouterr().out
    monkeypatch.setattr(_loop, "native_bf16", lambda device: True)
    fit(toy_collection(), loader(16), config=quick(amp="auto", epochs=1))
    assert "in bfloat16 autocast (amp 'auto'), default (contiguous) memory format" in capsys.readouterr().out
    fit(toy_collection(), loader(16), config=quick(epochs=1))  # settings that need no explaining
    assert "memory format" not in capsys.readouterr().out


def test_native_bf16_is_false_on_a_torch_without_the_cpu_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.delattr(torch.cpu, name)
    assert native_bf16(torch.device("cpu")) is False
    assert resolve_amp("auto", "cpu") == "none"
