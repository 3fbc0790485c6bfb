"""onnxruntime against torch eager for the zoo's inference graphs (MODEL group), with the parity error.

Each zoo model is exported with ``export_bricks_as_onnx`` (dynamic batch) and run in onnxruntime
(CPU, ``intra_op_num_threads`` = torch's threads, one inter-op thread, sequential execution);
eager is the collection called on the MODEL group under ``no_grad``. The reference row is a bare
torchvision resnet18 at 128 px exported alone with ``torch.onnx.export(dynamo=True)``. The parity
column is the largest |onnxruntime - torch| over all outputs (``check_onnx_parity(...).worst``)
at the largest batch size timed.
Run: ``python benchmarks/export.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import functools
import io
import tempfile
import time
import warnings
from collections.abc import Callable
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torchvision
from _models import build_model, multitask_model, set_threads, shapes_batch, single_task_model
from _timing import interleaved_medians, load_average, machine, markdown_table, verdict

from brickzoo import BrickCollection, check_onnx_parity, export_bricks_as_onnx

TARGET = 2.0  # onnxruntime at least this much faster than eager at batch 1
RESNET18 = "torchvision resnet18 (bare, 128 px)"


def zoo_models() -> dict[str, Callable[[], BrickCollection]]:
    """The zoo's inference graphs: name -> builder."""
    return {
        "classification (resnet10t + head)": lambda: single_task_model("classify"),
        "segmentation (shapes_segmentation)": lambda: build_model("shapes_segmentation"),
        "detection (shapes_detection)": lambda: build_model("shapes_detection"),
        "three-task (shapes_multitask)": multitask_model,
    }


def ort_session(path: Path, threads: int) -> ort.InferenceSession:
    """A CPU session with fixed threads: ``threads`` intra-op, one inter-op, sequential execution
    (graph optimizations at onnxruntime's default, ``ORT_ENABLE_ALL``)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass
class Exported:
    """A model ready to time: its eager call, its onnxruntime session and the parity error."""

    eager: Callable[[torch.Tensor], object]
    session: ort.InferenceSession
    input_name: str
    image_size: int
    parity: float
    export_seconds: float


def export_zoo_model(
    model: BrickCollection, folder: Path, name: str, image_size: int, batches: list[int], threads: int
) -> Exported:
    """Export the MODEL group with ``export_bricks_as_onnx`` (traced at batch 2, dynamic batch) and
    check its parity at the largest batch size timed."""
    model.eval()
    path = folder / f"{name.split()[0]}.onnx"
    started = time.perf_counter()
    export_bricks_as_onnx(path, model, {"images": shapes_batch(2, image_size)["images"]}, groups="MODEL")
    seconds = time.perf_counter() - started
    report = check_onnx_parity(path, model, {"images": shapes_batch(max(batches), image_size)["images"]})
    return Exported(
        eager=lambda images: model({"images": images}, groups="MODEL"),
        session=ort_session(path, threads),
        input_name="images",
        image_size=image_size,
        parity=report.worst,
        export_seconds=seconds,
    )


def export_resnet18(folder: Path, image_size: int, batches: list[int], threads: int) -> Exported:
    """The issue's reference: torchvision resnet18 exported alone with ``torch.onnx.export(dynamo=True)``."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    path = folder / "resnet18.onnx"
    batch = torch.export.Dim("batch", min=1, max=4096)
    started = time.perf_counter()
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.rand(2, 3, image_size, image_size),),
            str(path),
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            dynamo=True,
            external_data=False,
        )
    seconds = time.perf_counter() - started
    session = ort_session(path, threads)
    images = torch.rand(max(batches), 3, image_size, image_size)
    with torch.no_grad():
        expected = model(images).numpy()
    (got,) = session.run(None, {"images": images.numpy()})
    return Exported(
        eager=model,
        session=session,
        input_name="images",
        image_size=image_size,
        parity=float(np.max(np.abs(got.astype(np.float64) - expected))),
        export_seconds=seconds,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--image-size", type=int, default=64, help="image size of the zoo models")
    parser.add_argument("--reference-size", type=int, default=128, help="image size of the bare resnet18")
    parser.add_argument("--threads", type=int, default=2, help="torch threads and onnxruntime intra-op threads")
    parser.add_argument(
        "--calls",
        type=int,
        default=10,
        help="calls per round at batch 1 (calls // batch size, at least 2, for larger batches)",
    )
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    parser.add_argument("--out", type=Path, default=None, help="keep the ONNX files in this folder")
    parser.add_argument(
        "--pause",
        type=float,
        default=0.1,
        help="seconds of untimed sleep after each block of calls (then one untimed call opens the next "
        "block), so that the other runtime's threads stop spinning before a candidate is timed",
    )
    parser.add_argument("--quick", action="store_true", help="a few seconds: classification only, batches 1 and 2")
    args = parser.parse_args()
    names = [*zoo_models(), RESNET18]
    if args.quick:
        names, args.batch_sizes, args.calls, args.rounds, args.pause = names[:1], [1, 2], 1, 2, 0.0
    set_threads(args.threads)

    rows = []
    ratios_at_1: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as temporary:
        folder = args.out or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        builders = zoo_models()
        for name in names:
            if name == RESNET18:
                exported = export_resnet18(folder, args.reference_size, args.batch_sizes, args.threads)
            else:
                exported = export_zoo_model(
                    builders[name](), folder, name, args.image_size, args.batch_sizes, args.threads
                )
            for batch_size in args.batch_sizes:
                images = torch.rand(batch_size, 3, exported.image_size, exported.image_size)
                feed = {exported.input_name: images.numpy()}
                calls = max(2, args.calls // batch_size)
                with torch.no_grad():
                    times = interleaved_medians(
                        {
                            "eager": functools.partial(exported.eager, images),
                            "onnxruntime": functools.partial(exported.session.run, None, feed),
                        },
                        calls=calls,
                        rounds=args.rounds,
                        warmup=max(2, calls),
                        pause=args.pause,
                        settle=1 if args.pause else 0,
                    )
                speedup = times["eager"] / times["onnxruntime"]
                if batch_size == 1 and name != RESNET18:
                    ratios_at_1[name] = speedup
                rows.append(
                    [
                        name,
                        str(batch_size),
                        f"{times['eager'] * 1e3:.2f}",
                        f"{times['onnxruntime'] * 1e3:.2f}",
                        f"{speedup:.2f}x",
                        f"{exported.parity:.2g}",
                        f"{exported.export_seconds:.1f}",
                    ]
                )
    print(
        f"ONNX export: onnxruntime vs torch eager, MODEL group, zoo models at {args.image_size} px "
        f"({machine()}; onnxruntime {ort.__version__}, {args.threads} intra-op thread(s), 1 inter-op, sequential; "
        f"load average {load_average()})"
    )
    header = ["model", "batch", "eager ms", "onnxruntime ms", "eager / onnxruntime", "parity (max abs)", "export s"]
    print(markdown_table(header, rows))
    if ratios_at_1:
        worst = min(ratios_at_1, key=ratios_at_1.__getitem__)
        print(
            f"target: onnxruntime >= {TARGET}x faster than eager at batch 1 for every zoo model; slowest speed-up "
            f"{ratios_at_1[worst]:.2f}x ({worst}) ({verdict(ratios_at_1[worst] >= TARGET)})"
        )
    else:
        print(f"target: onnxruntime >= {TARGET}x faster than eager at batch 1; batch 1 was not timed")


if __name__ == "__main__":
    main()
