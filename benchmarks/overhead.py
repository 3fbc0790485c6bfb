"""Per-brick dispatch overhead: a chain of 20 Linear(16, 16) bricks at batch 1 on one thread.

Compares brickzoo with a hand-written module doing the same calls and dict writes, and with
torchbricks and tensordict when they are installed (``pip install -e ".[bench]"``).
Run: ``python benchmarks/overhead.py``.
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Callable

import torch
from _timing import interleaved_medians, machine, markdown_table
from torch import nn

import brickzoo

DEPTH = 20
WIDTH = 16


def names(i: int) -> tuple[str, str]:
    return f"x{i}", f"x{i + 1}"


class HandWritten(nn.Module):
    """The reference: the same module calls and dict writes, with no framework in between."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.wiring = [names(i) for i in range(len(layers))]

    def forward(self, named: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        named = dict(named)
        for layer, (source, target) in zip(self.layers, self.wiring, strict=True):
            named[target] = layer(named[source])
        return named


def make_layers() -> list[nn.Module]:
    torch.manual_seed(0)
    return [nn.Linear(WIDTH, WIDTH) for _ in range(DEPTH)]


def candidates(x: torch.Tensor) -> dict[str, Callable[[], object]]:
    layers = make_layers()
    inputs = {"x0": x}
    hand = HandWritten(layers)
    bricks = brickzoo.BrickCollection(
        {f"layer{i}": brickzoo.BrickTrainable(layer, [names(i)[0]], [names(i)[1]]) for i, layer in enumerate(layers)}
    )
    expected = hand(inputs)[f"x{DEPTH}"]
    torch.testing.assert_close(bricks(inputs)[f"x{DEPTH}"], expected)
    found: dict[str, Callable[[], object]] = {
        "hand-written nn.Module": lambda: hand(inputs),
        "brickzoo": lambda: bricks(inputs),
    }
    if importlib.util.find_spec("torchbricks"):
        from torchbricks.brick_collection import BrickCollection as TBCollection
        from torchbricks.bricks import BrickTrainable as TBTrainable

        tb = TBCollection(
            {f"layer{i}": TBTrainable(layer, [names(i)[0]], [names(i)[1]]) for i, layer in enumerate(layers)}
        )
        torch.testing.assert_close(tb(inputs)[f"x{DEPTH}"], expected)
        found["torchbricks"] = lambda: tb(inputs)
    if importlib.util.find_spec("tensordict"):
        from tensordict import TensorDict
        from tensordict.nn import TensorDictModule, TensorDictSequential

        td_model = TensorDictSequential(
            *[TensorDictModule(layer, in_keys=[names(i)[0]], out_keys=[names(i)[1]]) for i, layer in enumerate(layers)]
        )
        td_input = TensorDict({"x0": x}, batch_size=[1])
        torch.testing.assert_close(td_model(td_input.clone())[f"x{DEPTH}"], expected)
        found["tensordict"] = lambda: td_model(td_input.clone())
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="forward calls per round")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    args = parser.parse_args()
    torch.set_num_threads(1)
    x = torch.randn(1, WIDTH)
    with torch.no_grad():
        times = interleaved_medians(candidates(x), calls=args.calls, rounds=args.rounds)
    reference = times["hand-written nn.Module"]
    rows = [[name, f"{seconds * 1e6:.1f}", f"{seconds / reference:.2f}x"] for name, seconds in times.items()]
    print(f"Dispatch overhead: {DEPTH} x Linear({WIDTH}, {WIDTH}) bricks, batch 1 ({machine()})")
    print(markdown_table(["implementation", "us / forward", "vs hand-written"], rows))
    print(f"target: brickzoo <= 1.10x hand-written; measured {times['brickzoo'] / reference:.2f}x")


if __name__ == "__main__":
    main()
