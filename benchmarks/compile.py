"""torch.compile against eager for the MODEL group: compile time, steady-state time and graph breaks.

For each model: the graph-break count from ``torch._dynamo.explain`` (target 0), the time of the
first compiled call (compilation included, with an empty inductor cache unless ``--warm-cache``),
then eager and compiled forwards (eval, no_grad) timed in interleaved rounds after warm-up, the
number of recompilations during warm-up and timing, and the largest |compiled - eager| over the
outputs. The default backend is inductor (tens of seconds to compile per model on a small CPU).
``--variants`` adds rows compiled with two inductor settings that explain its CPU timings:
``layout_optimization=False`` (keep NCHW convolutions) and ``freezing=True`` (weights as
constants: BatchNorm folded into convolutions, mkldnn weights prepacked); their compile times
are not cold ones, as they reuse kernels compiled for the rows before them.
Run: ``python benchmarks/compile.py`` (``--quick`` for a smoke run on the ``aot_eager`` backend).
"""

from __future__ import annotations

import argparse
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


def largest_difference(a: dict[str, Any], b: dict[str, Any]) -> float:
    """The largest |a - b| over the tensors of two output dicts (which must have the same keys)."""
    if a.keys() != b.keys():
        raise RuntimeError(f"compiled and eager outputs differ in names: {sorted(a)} vs {sorted(b)}")
    worst = 0.0
    for name, value in a.items():
        if isinstance(value, torch.Tensor) and value.numel():
            worst = max(worst, float((value.double() - b[name].double()).abs().max()))
    return worst


def graph_breaks(model: BrickCollection, inputs: dict[str, torch.Tensor]) -> tuple[int, int, list[str]]:
    """``(graph breaks, graphs, break reasons)`` of the MODEL group under ``torch._dynamo.explain``."""
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(inputs, groups="MODEL")
    reasons = [str(reason.reason).splitlines()[0] for reason in explanation.break_reasons]
    torch._dynamo.reset()
    return explanation.graph_break_count, explanation.graph_count, reasons


def compiled_graphs() -> int:
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend")
    parser.add_argument("--calls", type=int, default=5, help="forward calls per round")
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
    variants = VARIANTS if args.variants and args.backend == "inductor" else {"": {}}
    cache = None
    if not args.warm_cache:  # compile from scratch, as on a fresh machine
        cache = tempfile.mkdtemp(prefix="brickzoo_inductor_")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
    set_threads(args.threads)
    inputs = {"images": shapes_batch(args.batch_size, args.image_size)["images"]}

    rows = []
    total_breaks = 0
    notes = []
    try:
        for name in names:
            model = MODELS[name]().eval()
            with torch.no_grad():
                breaks, graphs, reasons = graph_breaks(model, inputs)
                total_breaks += breaks
                notes += [f"{name}: {reason}" for reason in reasons]
                eager_outputs = model(inputs, groups="MODEL")  # also caches the plan the trace reads
                for label, patch in variants.items():
                    torch._dynamo.reset()
                    with torch._inductor.config.patch(patch):
                        compiled = torch.compile(model, backend=args.backend, fullgraph=breaks == 0)
                        started = time.perf_counter()
                        fast = compiled(inputs, groups="MODEL")
                        compile_seconds = time.perf_counter() - started
                        graphs_after_compile = compiled_graphs()
                        times = interleaved_medians(
                            {
                                "eager": functools.partial(model, inputs, groups="MODEL"),
                                "compiled": functools.partial(compiled, inputs, groups="MODEL"),
                            },
                            calls=args.calls,
                            rounds=args.rounds,
                            warmup=max(2, args.calls),
                            pause=args.pause,
                            settle=1 if args.pause else 0,
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
    finally:
        if cache is not None:
            shutil.rmtree(cache, ignore_errors=True)
    print(
        f"torch.compile ({args.backend}) vs eager: MODEL group, eval + no_grad, batch {args.batch_size} at "
        f"{args.image_size} px ({machine()}; {'warm' if args.warm_cache else 'empty'} compile cache; "
        f"load average {load_average()})"
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
