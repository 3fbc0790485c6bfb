"""Shared three-task model against single-task models: forward time of the MODEL group (eval, no_grad).

The three-task model is the zoo's ``shapes_multitask`` (preprocessor, timm resnet10t, FPN and
classification, segmentation and detection heads). It is compared with three full single-task
models (the same recipe with one head each; the FPN kept where the head reads it), which get the
three-task model's weights so that each computes exactly the three-task model's outputs of its
head. The cost of running the three separately is the sum of their times. A per-brick breakdown
of the three-task model follows the table: shared / separate = (B + F + H) / (3B + 2F + H) for
backbone B, FPN F and heads H, which is at most 1/2 exactly when the heads cost no more than the
backbone.
Run: ``python benchmarks/multitask.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import torch
from _models import HEADS, multitask_model, set_threads, shapes_batch, single_task_model
from _timing import interleaved_medians, load_average, machine, markdown_table, verdict
from torch import nn

from brickzoo import BrickCollection

TARGET = 0.5  # the three-task model costs at most this fraction of the three single-task models


def copy_weights(source: BrickCollection, target: BrickCollection) -> None:
    """Give ``target`` the weights of ``source`` for every brick path they share."""
    state = source.state_dict()
    own = target.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise KeyError(f"the three-task model lacks weights the single-task model needs: {missing[:5]}")
    target.load_state_dict({name: state[name] for name in own})


def check_same_outputs(
    shared: BrickCollection, singles: dict[str, BrickCollection], inputs: dict[str, torch.Tensor]
) -> None:
    """Each single-task model writes exactly the three-task model's tensors of its head."""
    reference = shared(inputs, groups="MODEL")
    for head, model in singles.items():
        outputs = model(inputs, groups="MODEL", return_inputs=False)
        head_outputs = [name for name in outputs if name.startswith(f"{head}/")]
        if not head_outputs:
            raise RuntimeError(f"the {head} model wrote no {head}/... tensor; got {sorted(outputs)}")
        for name in head_outputs:
            try:
                torch.testing.assert_close(outputs[name], reference[name])
            except AssertionError as error:
                raise AssertionError(
                    f"{name} of the {head} model differs from the three-task model's: {error}"
                ) from None


def count_parameters(model: BrickCollection) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def brick_times(model: BrickCollection, inputs: dict[str, torch.Tensor], calls: int) -> dict[str, float]:
    """Median seconds of each MODEL brick's module in a forward of ``model``, from forward hooks."""
    samples: dict[str, list[float]] = {}
    handles = []
    for path, brick in model.named_bricks():
        module = getattr(brick, "model", None)
        if "MODEL" not in brick.groups or not isinstance(module, nn.Module):
            continue
        samples[path] = []
        started: list[float] = []
        handles.append(module.register_forward_pre_hook(lambda *_, s=started: s.append(time.perf_counter())))
        handles.append(
            module.register_forward_hook(
                lambda *_, s=started, out=samples[path]: out.append(time.perf_counter() - s.pop())
            )
        )
    try:
        for _ in range(calls):
            model(inputs, groups="MODEL")
    finally:
        for handle in handles:
            handle.remove()
    return {path: statistics.median(values) for path, values in samples.items() if values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--calls", type=int, default=5, help="forward calls per round")
    parser.add_argument("--rounds", type=int, default=25, help="interleaved rounds")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls of each model first")
    parser.add_argument("--quick", action="store_true", help="a few seconds: 1 call x 2 rounds")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.rounds, args.warmup = 1, 2, 1
    set_threads(args.threads)

    shared = multitask_model().eval()
    singles = {head: single_task_model(head).eval() for head in HEADS}
    for model in singles.values():
        copy_weights(shared, model)
    inputs = {"images": shapes_batch(args.batch_size, args.image_size)["images"]}
    load_before = load_average()
    with torch.no_grad():
        check_same_outputs(shared, singles, inputs)
        candidates: dict[str, Callable[[], object]] = {
            "three-task (shared backbone + FPN)": functools.partial(shared, inputs, groups="MODEL")
        }
        for head, model in singles.items():
            candidates[f"{head} only"] = functools.partial(model, inputs, groups="MODEL")
        times = interleaved_medians(candidates, calls=args.calls, rounds=args.rounds, warmup=args.warmup)
        breakdown = brick_times(shared, inputs, calls=max(3, args.rounds))

    three_task = times["three-task (shared backbone + FPN)"]
    separate = sum(times[f"{head} only"] for head in HEADS)
    sizes = {"three-task (shared backbone + FPN)": count_parameters(shared)}
    sizes.update({f"{head} only": count_parameters(model) for head, model in singles.items()})
    rows = [
        [name, f"{sizes[name]:.2f}", f"{seconds * 1e3:.2f}", f"{three_task / seconds:.2f}x"]
        for name, seconds in times.items()
    ]
    separate_size = sum(sizes[f"{head} only"] for head in HEADS)
    rows.append(
        [
            "three single-task models (sum)",
            f"{separate_size:.2f}",
            f"{separate * 1e3:.2f}",
            f"{three_task / separate:.2f}x",
        ]
    )
    print(
        f"Multitask: forward of the MODEL group, eval + no_grad, batch {args.batch_size} at "
        f"{args.image_size} px ({machine()}; load average {load_before} -> {load_average()})"
    )
    print(markdown_table(["model", "M params", "ms / forward", "three-task / this"], rows))
    ratio = three_task / separate
    print(
        f"target: three-task <= {TARGET}x the three single-task models; measured {ratio:.2f}x "
        f"({verdict(ratio <= TARGET)}); three-task / classification only = {three_task / times['classify only']:.2f}x"
    )
    # shared / separate = (B + F + H) / (3B + 2F + H) <= 1/2 exactly when the heads H cost no more than the
    # backbone B (preprocessor included); the FPN F drops out.
    heads = sum(seconds for path, seconds in breakdown.items() if path.split("/")[0] in HEADS)
    backbone = sum(seconds for path, seconds in breakdown.items() if path.split("/")[0] in ("preprocessor", "backbone"))
    print(
        "three-task time per brick (ms, forward hooks): "
        + ", ".join(f"{path} {seconds * 1e3:.2f}" for path, seconds in breakdown.items())
    )
    print(
        f"the ratio is <= 0.5 exactly when the heads cost no more than the backbone: heads {heads * 1e3:.2f} ms, "
        f"preprocessor + backbone {backbone * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    main()
