"""torch.compile against eager: the MODEL group's forward and a whole training step; compile time, steady-state time
and graph breaks.

For each model, one row for the MODEL group: the graph-break count from ``torch._dynamo.explain``
(target 0), the time of the first compiled call (compilation included, with an empty inductor
cache unless ``--warm-cache``), then eager and compiled forwards (eval, no_grad) timed in
interleaved rounds after warm-up, the number of recompilations during warm-up and timing, and the
largest |compiled - eager| over the outputs. Then one row for a training step: forward of the
MODEL and LOSS groups (the collection compiled with ``fullgraph=True``, backward through AOT
autograd), the summed losses' backward and an AdamW step, against the same step in eager mode on
a copy of the model with the same weights; graph breaks of MODEL + LOSS, the first compiled step's
time, and |compiled - eager| of the first step's total loss. The default backend is inductor (tens
of seconds to compile per model on a small CPU). ``--variants`` adds forward rows compiled with
two inductor settings that explain its CPU timings: ``layout_optimization=False`` (keep NCHW
convolutions) and ``freezing=True`` (weights as constants: BatchNorm folded into convolutions,
mkldnn weights prepacked); their compile times are not cold ones, as they reuse kernels compiled
for the rows before them.
Run: ``python benchmarks/compile.py`` (``--quick`` for a smoke run on the ``aot_eager`` backend).
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
import torch._dynamo
import torch._dynamo.utils
import torch._inductor.config
from _models import multitask_model, set_threads, shapes_batch, single_task_model
from _timing import interleaved_medians, load_average, machine, markdown_table, verdict

from brickzoo import BrickCollection

MODELS: dict[str, Callable[[], BrickCollection]] = {
    "classification (resnet10t + head)": lambda: single_task_model("classify"),
    "three-task (shapes_multitask)": multitask_model,
}
VARIANTS: dict[str, dict[str, Any]] = {  # row label -> inductor config patch
    "": {},
    ", layout_optimization=False": {"layout_optimization": False},
    ", freezing=True": {"freezing": True},
}
INFERENCE = "MODEL"  # one name: with a set, inductor fails to pickle its FX-graph cache key and bypasses the cache
TRAINING = frozenset({"MODEL", "LOSS"})  # what the compiled collection runs in a training step


def largest_difference(a: dict[str, Any], b: dict[str, Any]) -> float:
    """The largest |a - b| over the tensors of two output dicts (which must have the same keys)."""
    if a.keys() != b.keys():
        raise RuntimeError(f"compiled and eager outputs differ in names: {sorted(a)} vs {sorted(b)}")
    worst = 0.0
    for name, value in a.items():
        if isinstance(value, torch.Tensor) and value.numel():
            worst = max(worst, float((value.double() - b[name].double()).abs().max()))
    return worst


def graph_breaks(
    model: BrickCollection, inputs: dict[str, torch.Tensor], groups: str | frozenset[str] = INFERENCE
) -> tuple[int, int, list[str]]:
    """``(graph breaks, graphs, break reasons)`` of a group selection under ``torch._dynamo.explain``."""
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(inputs, groups=groups)
    reasons = [str(reason.reason).splitlines()[0] for reason in explanation.break_reasons]
    torch._dynamo.reset()
    return explanation.graph_break_count, explanation.graph_count, reasons


def compiled_graphs() -> int:
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def timing_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``interleaved_medians`` the command line asks for."""
    return {
        "calls": args.calls,
        "rounds": args.rounds,
        "warmup": max(2, args.calls),
        "pause": args.pause,
        "settle": 1 if args.pause else 0,
    }


def inference_rows(
    name: str, model: BrickCollection, inputs: dict[str, torch.Tensor], args: argparse.Namespace, notes: list[str]
) -> tuple[list[list[str]], int]:
    """The MODEL-group rows of one model (one per inductor variant) and its graph-break count."""
    variants = VARIANTS if args.variants and args.backend == "inductor" else {"": {}}
    rows = []
    model.eval()
    with torch.no_grad():
        eager_outputs = model(inputs, groups=INFERENCE)  # also caches the plan the traces read
        breaks, graphs, reasons = graph_breaks(model, inputs)
        notes += [f"{name}: {reason}" for reason in reasons]
        for label, patch in variants.items():
            torch._dynamo.reset()
            with torch._inductor.config.patch(patch):
                compiled = torch.compile(model, backend=args.backend, fullgraph=breaks == 0)
                started = time.perf_counter()
                fast = compiled(inputs, groups=INFERENCE)
                compile_seconds = time.perf_counter() - started
                graphs_after_compile = compiled_graphs()
                times = interleaved_medians(
                    {
                        "eager": functools.partial(model, inputs, groups=INFERENCE),
                        "compiled": functools.partial(compiled, inputs, groups=INFERENCE),
                    },
                    **timing_options(args),
                )
            rows.append(
                [
                    f"{name}{label}",
                    str(breaks),
                    str(graphs),
                    f"{compile_seconds:.1f}",
                    str(compiled_graphs() - graphs_after_compile),
                    f"{times['eager'] * 1e3:.2f}",
                    f"{times['compiled'] * 1e3:.2f}",
                    f"{times['eager'] / times['compiled']:.2f}x",
                    f"{largest_difference(fast, eager_outputs):.2g}",
                ]
            )
    torch._dynamo.reset()
    return rows, breaks


def training_step(
    model: BrickCollection, forward: Callable[..., dict[str, Any]], batch: dict[str, torch.Tensor]
) -> Callable[[], torch.Tensor]:
    """``step() -> total loss``: forward of MODEL + LOSS through ``forward``, summed losses, backward, AdamW step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> torch.Tensor:
        total = sum(model.extract_losses(forward(batch, groups=TRAINING)).values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()  # type: ignore[union-attr]
        optimizer.step()
        return total.detach()  # type: ignore[union-attr]

    return step


def training_row(
    name: str, model: BrickCollection, batch: dict[str, torch.Tensor], args: argparse.Namespace, notes: list[str]
) -> tuple[list[str], int]:
    """The training-step row of one model (compiled against eager, two copies with the same weights)."""
    model.train()
    model.check_batch(batch, groups=TRAINING)  # the value checks, once, outside the timed steps
    model(batch, groups=TRAINING)  # caches the plan the trace reads
    breaks, graphs, reasons = graph_breaks(model, batch, TRAINING)
    notes += [f"{name}, training step: {reason}" for reason in reasons]
    eager_model, compiled_model = copy.deepcopy(model), copy.deepcopy(model)
    compiled_model(batch, groups=TRAINING)  # a copy has no cached plan: cache the one the trace reads
    compiled_model.load_state_dict(eager_model.state_dict())  # and undo that call's BatchNorm statistics
    eager_step = training_step(eager_model, eager_model, batch)
    compiled_step = training_step(
        compiled_model, torch.compile(compiled_model, backend=args.backend, fullgraph=breaks == 0), batch
    )
    eager_loss = eager_step()
    started = time.perf_counter()
    compiled_loss = compiled_step()
    compile_seconds = time.perf_counter() - started
    graphs_after_compile = compiled_graphs()
    times = interleaved_medians({"eager": eager_step, "compiled": compiled_step}, **timing_options(args))
    torch._dynamo.reset()
    row = [
        f"{name}, training step",
        str(breaks),
        str(graphs),
        f"{compile_seconds:.1f}",
        str(compiled_graphs() - graphs_after_compile),
        f"{times['eager'] * 1e3:.2f}",
        f"{times['compiled'] * 1e3:.2f}",
        f"{times['eager'] / times['compiled']:.2f}x",
        f"{abs(float(compiled_loss) - float(eager_loss)):.2g}",
    ]
    return row, breaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend")
    parser.add_argument("--calls", type=int, default=5, help="calls (forwards or training steps) per round")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    parser.add_argument(
        "--pause",
        type=float,
        default=0.1,
        help="seconds of untimed sleep after each block of calls (then one untimed call opens the next block)",
    )
    parser.add_argument("--variants", action="store_true", help="add the layout_optimization/freezing rows")
    parser.add_argument("--warm-cache", action="store_true", help="use inductor's usual on-disk cache")
    parser.add_argument("--quick", action="store_true", help="a few seconds: classification only, aot_eager")
    args = parser.parse_args()
    names = list(MODELS)
    if args.quick:
        names, args.backend, args.calls, args.rounds, args.pause = names[:1], "aot_eager", 1, 2, 0.0
    cache = None
    if not args.warm_cache:  # compile from scratch, as on a fresh machine
        cache = tempfile.mkdtemp(prefix="brickzoo_inductor_")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
    set_threads(args.threads)
    batch = shapes_batch(args.batch_size, args.image_size)  # images and every target
    rows: list[list[str]] = []
    total_breaks = 0
    notes: list[str] = []
    try:
        for name in names:
            model = MODELS[name]()
            forward_rows, forward_breaks = inference_rows(name, model, {"images": batch["images"]}, args, notes)
            step_row, step_breaks = training_row(name, model, batch, args, notes)
            rows += [*forward_rows, step_row]
            total_breaks += forward_breaks + step_breaks
    finally:
        if cache is not None:
            shutil.rmtree(cache, ignore_errors=True)
    print(
        f"torch.compile ({args.backend}) vs eager: MODEL group (eval + no_grad) and training step (MODEL + LOSS "
        f"forward, backward, AdamW step), batch {args.batch_size} at {args.image_size} px ({machine()}; "
        f"{'warm' if args.warm_cache else 'empty'} compile cache; load average {load_average()})"
    )
    header = [
        "model",
        "graph breaks",
        "graphs",
        "compile s",
        "recompiles",
        "eager ms",
        "compiled ms",
        "eager / compiled",
        "max abs diff",
    ]
    print(markdown_table(header, rows))
    for note in notes:
        print(f"  break: {note}")
    print(f"target: 0 graph breaks; measured {total_breaks} ({verdict(total_breaks == 0)})")


if __name__ == "__main__":
    main()
