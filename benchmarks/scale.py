"""The three-task model at realistic sizes: eager against onnxruntime, peak memory, post-processing and NMS cost.

The model is the prebuilt ``shapes_multitask`` (``brickzoo.zoo.load_pretrained``: preprocessor, timm
resnet10t to its third stage, FPN on strides 4-16, classification, segmentation and detection heads,
32-channel detection towers; trained weights) with the detection post-processing at the factory
defaults for real images: ``pre_nms_top_k`` 1000 and
``max_detections`` 100 (the 64-px recipe ships 100 and 20). Images: the shapes data of
``shapes_multitask_320`` (2 to 8 shapes of 6-20% of the side) drawn at each size. Per size and batch:

- eager ms (MODEL group, eval, ``no_grad``) and onnxruntime ms (the zoo export of
  ``brickzoo.zoo.export_onnx`` at that size: the heads' results as outputs, dynamic height and
  width; CPU, intra-op threads = torch's, one inter-op thread, sequential), in interleaved rounds;
- in the same rounds, the detection post-processing alone on dense outputs like a trained head's
  (:func:`trained_like_outputs`), and its share of the eager forward;
- peak memory: the high-water mark of the resident set (``VmHWM``) of a fresh process per
  configuration and runtime, reset once the model or session is loaded (``/proc/self/clear_refs``),
  shown as the loaded process's size plus the forward's own peak above it. (tracemalloc does not
  see torch's CPU tensors, and torch keeps no CPU allocator statistics.)

Then NMS alone at the largest size on the best ``pre_nms_top_k`` candidates (100, 300, 1000) of
those outputs: brickzoo's ``greedy_nms_keep_sorted`` (eager on the CPU above 128 candidates:
torchvision's NMS kernel per image and label), its block-by-block formulation (eager up to one block,
on other devices and in half precision), its single-matrix
formulation (the one compiled and ONNX graphs run, here run eagerly) and ``torchvision.ops.batched_nms``
image by image, with the rounds of parallel decisions and a check that all four keep the same boxes.
Run: ``python benchmarks/scale.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision
from _models import set_threads
from _timing import interleaved_medians, load_average, machine, markdown_table, verdict
from export import ort_session

from brickzoo import BrickCollection
from brickzoo.bag_of_bricks._boxes import (
    _blocks_keep,
    _decide_round,
    _suppressors,
    _undecided_left,
    anchor_points,
    boxes_to_ltrb,
    centerness_from_ltrb,
    float32_at_most,
    greedy_nms_keep_sorted,
    ltrb_to_boxes,
)
from brickzoo.bag_of_bricks.object_detection import DetectionPostprocessor
from brickzoo.data import ShapesDataset, make_loader
from brickzoo.zoo import export_onnx, load_pretrained
from brickzoo.zoo._config import read_config

POST_TARGET = 0.05  # post-processing at most this share of the eager forward at the largest size
ORT_TARGET = 1.5  # onnxruntime at least this much faster than eager at batch 1 at the largest size
PRE_NMS_TOP_K = 1000  # the factory default, for real images
MAX_DETECTIONS = 100
Batch = dict[str, torch.Tensor]


def scale_model() -> BrickCollection:
    """The prebuilt ``shapes_multitask`` (trained weights: scores without the ties of an untrained head, so
    onnxruntime and torch rank the same boxes) with the detection post-processing at the factory defaults
    (1000 candidates, 100 out), in eval mode."""
    overrides = [
        f"model.heads.detect.pre_nms_top_k={PRE_NMS_TOP_K}",
        f"model.heads.detect.max_detections={MAX_DETECTIONS}",
    ]
    return load_pretrained("shapes_multitask", overrides=overrides, progress=False).model.eval()


def shapes_images(batch_size: int, image_size: int, seed: int = 7) -> Batch:
    """A batch of ``shapes_multitask_320``'s data drawn at ``image_size``: ``images`` [B, 3, S, S], ``boxes``
    [B, M, 4] and ``box_labels`` [B, M] (-1 for padding)."""
    arguments = {**read_config("shapes_multitask_320")[0]["data"]["args"], "image_size": image_size}
    dataset = ShapesDataset(batch_size, seed=seed, **arguments)
    return dict(next(iter(make_loader(dataset, batch_size=batch_size, shuffle=False))))


def detection_levels(model: BrickCollection, images: torch.Tensor) -> tuple[list[tuple[int, int]], list[int]]:
    """The ``(H, W)`` of each feature level the detection head reads at this image size, and their strides."""
    head = model["detect"]["head"]
    with torch.no_grad():
        named = model({"images": images[:1]}, groups="MODEL")
    sizes = [(int(named[name].shape[-2]), int(named[name].shape[-1])) for name in head.input_names]
    return sizes, list(head.model.strides)


def trained_like_outputs(
    points: torch.Tensor, boxes: torch.Tensor, box_labels: torch.Tensor, num_classes: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dense detections like those of a trained FCOS head on these images (for the post-processing's cost).

    A location inside a ground-truth box (the smallest one, where several hold it) predicts that box,
    its distances to the four sides scaled by ``exp(noise)`` with a standard deviation of 0.05 at
    the box centre up to 0.3 at its border, its class with a logit falling from 3 to -1 and a
    centre-ness logit from 2 to -2 (plus noise). Every other location predicts background (class
    logits around -6, centre-ness -4) and a box of 8 to 64 px around itself. So the best
    candidates cluster on the objects, as they do for a trained detector, and NMS has work to do.

    Args:
        points (Tensor[N, 2]): the head's location points ``(x, y)`` in input pixels.
        boxes (Tensor[B, M, 4]): ground-truth boxes, xyxy in input pixels.
        box_labels (Tensor[B, M]): their classes, -1 for padding.
        num_classes: ``C``.
        seed: seed of the noise.

    Returns:
        ``(cls_logits [B, N, C], boxes [B, N, 4], centerness [B, N])``, the head's outputs.
    """
    generator = torch.Generator().manual_seed(seed)
    batch, num = box_labels.shape[0], points.shape[0]
    inside = boxes_to_ltrb(points[None, :, None, :], boxes[:, None, :, :]).min(dim=-1).values > 0  # [B, N, M]
    inside &= (box_labels >= 0)[:, None, :]
    area = (boxes[..., 2:] - boxes[..., :2]).prod(dim=-1)  # [B, M]
    cost, match = torch.where(inside, area[:, None, :], math.inf).min(dim=-1)  # [B, N]
    positive = torch.isfinite(cost)  # [B, N]
    truth = boxes.gather(1, match[..., None].expand(-1, -1, 4))  # [B, N, 4]
    truth_ltrb = boxes_to_ltrb(points, truth).clamp(min=1e-3)  # [B, N, 4]
    border = 1 - centerness_from_ltrb(truth_ltrb)  # [B, N]: 0 at the centre, 1 at the border
    spread = 0.05 + 0.25 * border[..., None]  # [B, N, 1]
    predicted = ltrb_to_boxes(points, truth_ltrb * torch.exp(torch.randn(batch, num, 4, generator=generator) * spread))
    side = torch.rand(batch, num, 1, generator=generator) * 56 + 8  # [B, N, 1]
    background = torch.cat([points - side / 2, points + side / 2], dim=-1)  # [B, N, 4]
    is_class = torch.arange(num_classes) == box_labels.gather(1, match).clamp(min=0)[..., None]  # [B, N, C]
    cls_logits = torch.where(positive[..., None] & is_class, (3 - 4 * border)[..., None], -6.0)
    cls_logits = cls_logits + 0.5 * torch.randn(batch, num, num_classes, generator=generator)
    centerness = torch.where(positive, 2 - 4 * border, -4.0) + 0.5 * torch.randn(batch, num, generator=generator)
    return cls_logits, torch.where(positive[..., None], predicted, background), centerness


def dense_outputs(model: BrickCollection, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`trained_like_outputs` for the model's detection head at this batch's image size."""
    sizes, strides = detection_levels(model, batch["images"])
    points, _ = anchor_points(sizes, strides)  # [N, 2]
    num_classes = int(model["detect"]["head"].model.num_classes)
    return trained_like_outputs(points, batch["boxes"], batch["box_labels"], num_classes)


# -- eager, onnxruntime and the post-processing's share ---------------------------------------------
def export_at(model: BrickCollection, folder: Path, image_size: int, dynamic: bool) -> tuple[Path, float, float, bool]:
    """The zoo export at ``image_size``: ``(path, worst parity, seconds, dynamic height and width)``.

    Traced and checked on export_onnx's default example images (seeded noise).
    """
    path = folder / f"shapes_multitask_{image_size}.onnx"
    started = time.perf_counter()
    result = export_onnx(
        model,
        path,
        input_size=image_size,
        config_name="shapes_multitask (pre_nms_top_k 1000)",
        dynamic_image_size=dynamic,
    )
    seconds = time.perf_counter() - started
    return path, max(report.worst for report in result.parity), seconds, result.dynamic_image_size


def time_configuration(
    model: BrickCollection, path: Path, image_size: int, batch_size: int, args: argparse.Namespace
) -> dict[str, float]:
    """Median seconds of the eager forward, onnxruntime and the post-processing alone, in interleaved rounds."""
    batch = shapes_images(batch_size, image_size)
    images = batch["images"]
    session = ort_session(path, args.threads)
    feed = {session.get_inputs()[0].name: images.numpy()}
    post = model["detect"]["postprocess"].model
    dense = dense_outputs(model, batch)
    calls = max(1, round(args.calls * (64 / image_size) ** 2 / batch_size))
    with torch.no_grad():
        return interleaved_medians(
            {
                "eager": functools.partial(model, {"images": images}, groups="MODEL"),
                "onnxruntime": functools.partial(session.run, None, feed),
                "post-processing": functools.partial(post, *dense, images),
            },
            calls=calls,
            rounds=args.rounds,
            warmup=1,
            pause=args.pause,
            settle=1 if args.pause else 0,
        )


# -- peak memory, one fresh process per configuration --------------------------------------------------
def _rss_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024  # kB -> MiB


def memory_child(runtime: str, image_size: int, batch_size: int, path: str, threads: int) -> None:
    """In a fresh process: load the model (or session), reset the high-water mark, run 3 forwards, print MiB."""
    set_threads(threads)
    images = torch.rand(batch_size, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    if runtime == "eager":
        model = scale_model()

        def forward() -> object:
            with torch.no_grad():
                return model({"images": images}, groups="MODEL")
    else:
        session = ort_session(Path(path), threads)
        feed = {session.get_inputs()[0].name: images.numpy()}

        def forward() -> object:
            return session.run(None, feed)

    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # VmHWM := VmRSS: the peak from here on
    loaded = _rss_mib("VmRSS")
    for _ in range(3):
        forward()
    print(json.dumps({"loaded": loaded, "peak": _rss_mib("VmHWM")}))


def peak_memory(runtime: str, image_size: int, batch_size: int, path: Path, threads: int) -> dict[str, float]:
    """:func:`memory_child` in a subprocess: ``{"loaded": MiB, "peak": MiB}``."""
    command = [sys.executable, __file__, "--memory-child", runtime, str(image_size), str(batch_size), str(path)]
    result = subprocess.run(
        [*command, "--threads", str(threads)], capture_output=True, text=True, check=False, timeout=900
    )
    if result.returncode != 0:
        raise RuntimeError(f"memory child {command[2:]} failed:\n{result.stderr[-3000:]}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def memory_cell(measured: dict[str, float]) -> str:
    """``peak (+forward)``: the process's peak MiB and the forward's own part above the loaded process."""
    return f"{measured['peak']:.0f} (+{measured['peak'] - measured['loaded']:.0f})"


# -- NMS alone -------------------------------------------------------------------------------------------
def single_matrix_nms(
    boxes: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, iou_threshold: float
) -> tuple[torch.Tensor, int]:
    """The formulation compiled and exported graphs run (one ``[B, K, K]`` matrix), run eagerly:
    ``(keep [B, K], rounds of parallel decisions)``."""
    overlaps = _suppressors(boxes, labels, 0, boxes.shape[1], float32_at_most(iou_threshold))  # [B, K, K]
    weights = overlaps.to(torch.float32)  # [B, K, K] 0/1
    kept, suppressed, rounds = torch.zeros_like(valid), ~valid, 0
    while bool(_undecided_left(kept, suppressed)):
        kept, suppressed = _decide_round(weights, kept, suppressed)
        rounds += 1
    return kept, rounds


def torchvision_nms(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor
) -> list[torch.Tensor]:
    """``torchvision.ops.batched_nms`` on each image's valid candidates: the kept indices into K, per image."""
    kept = []
    for b in range(boxes.shape[0]):
        index = torch.nonzero(valid[b])[:, 0]
        kept.append(index[torchvision.ops.batched_nms(boxes[b, index], scores[b, index], labels[b, index], 0.6)])
    return kept


def nms_row(dense: Sequence[torch.Tensor], images: torch.Tensor, top_k: int, args: argparse.Namespace) -> list[str]:
    """Time the four NMS implementations on the best ``top_k`` candidates and check they keep the same ones."""
    post = DetectionPostprocessor(MAX_DETECTIONS, score_threshold=0.05, nms_threshold=0.6, pre_nms_top_k=top_k)
    boxes, scores, labels = post.top_candidates(*dense, images)  # [B, k, 4], [B, k], [B, k]
    valid = scores > post.score_threshold  # [B, k]
    eager = greedy_nms_keep_sorted(boxes, labels, valid, post.nms_threshold)
    blocks = _blocks_keep(boxes, labels, valid, post.nms_threshold)
    single, rounds = single_matrix_nms(boxes, labels, valid, post.nms_threshold)
    reference = torchvision_nms(boxes, scores, labels, valid)
    same = (
        torch.equal(eager, blocks)
        and torch.equal(blocks, single)
        and all(set(torch.nonzero(eager[b])[:, 0].tolist()) == set(kept.tolist()) for b, kept in enumerate(reference))
    )
    times = interleaved_medians(
        {
            "eager": functools.partial(greedy_nms_keep_sorted, boxes, labels, valid, post.nms_threshold),
            "blocks": functools.partial(_blocks_keep, boxes, labels, valid, post.nms_threshold),
            "single": functools.partial(single_matrix_nms, boxes, labels, valid, post.nms_threshold),
            "torchvision": functools.partial(torchvision_nms, boxes, scores, labels, valid),
        },
        calls=max(1, args.calls // 2),
        rounds=args.rounds,
        warmup=1,
    )
    return [
        str(top_k),
        str(boxes.shape[0]),
        f"{valid.sum().item() / boxes.shape[0]:.0f}",
        f"{eager.sum().item() / boxes.shape[0]:.1f}",
        str(rounds),
        f"{times['eager'] * 1e3:.2f}",
        f"{times['blocks'] * 1e3:.2f}",
        f"{times['single'] * 1e3:.2f}",
        f"{times['torchvision'] * 1e3:.2f}",
        f"{times['eager'] / times['torchvision']:.2f}x",
        "yes" if same else "NO",
    ]


# -- the run -----------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 320, 512])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--top-k", type=int, nargs="+", default=[100, 300, 1000], help="pre_nms_top_k of the NMS table")
    parser.add_argument("--threads", type=int, default=2, help="torch threads and onnxruntime intra-op threads")
    parser.add_argument("--calls", type=int, default=10, help="calls per round at 64 px and batch 1 (fewer above)")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds")
    parser.add_argument("--pause", type=float, default=0.1, help="untimed sleep after each block of calls")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--fixed-size", action="store_true", help="export at each size without dynamic height/width")
    parser.add_argument("--out", type=Path, default=None, help="keep the ONNX files in this folder")
    parser.add_argument("--quick", action="store_true", help="seconds: 64 px fixed size, batch 1, top-k 100, 2 rounds")
    parser.add_argument("--memory-child", nargs=4, metavar=("RUNTIME", "SIZE", "BATCH", "ONNX"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.batch_sizes, args.top_k, args.calls, args.rounds, args.pause = [64], [1], [100], 1, 2, 0.0
        args.fixed_size = True
    return args


def scale_rows(model: BrickCollection, folder: Path, args: argparse.Namespace) -> tuple[list[list[str]], dict]:
    """The main table's rows, and per (size, batch) the eager / onnxruntime ratio and the post-processing share."""
    rows, measured = [], {}
    for size in args.sizes:
        path, parity, export_seconds, dynamic = export_at(model, folder, size, not args.fixed_size)
        for batch_size in args.batch_sizes:
            times = time_configuration(model, path, size, batch_size, args)
            ratio, share = times["eager"] / times["onnxruntime"], times["post-processing"] / times["eager"]
            measured[size, batch_size] = (ratio, share)
            memory = ["", ""]
            if not args.no_memory:
                memory = [memory_cell(peak_memory(r, size, batch_size, path, args.threads)) for r in ("eager", "ort")]
            rows.append(
                [
                    str(size),
                    str(batch_size),
                    f"{times['eager'] * 1e3:.1f}",
                    f"{times['onnxruntime'] * 1e3:.1f}",
                    f"{ratio:.2f}x",
                    f"{times['post-processing'] * 1e3:.2f}",
                    f"{100 * share:.1f}%",
                    *memory,
                    f"{parity:.2g}{'' if dynamic else ' (fixed size)'}",
                    f"{export_seconds:.0f}",
                ]
            )
            print(f"  measured {size} px, batch {batch_size} (load average {load_average()})", file=sys.stderr)
    return rows, measured


def main() -> None:
    args = parse_args()
    if args.memory_child:
        runtime, size, batch_size, path = args.memory_child
        memory_child(runtime, int(size), int(batch_size), path, args.threads)
        return
    set_threads(args.threads)
    model = scale_model()
    load_before = load_average()
    with tempfile.TemporaryDirectory() as temporary:
        folder = args.out or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        rows, measured = scale_rows(model, folder, args)
    largest = max(args.sizes)
    batch = shapes_images(max(args.batch_sizes), largest)
    dense = dense_outputs(model, batch)
    nms_rows = []
    for batch_size in args.batch_sizes:
        for top_k in args.top_k:
            part = [d[:batch_size] for d in dense]
            nms_rows.append(nms_row(part, batch["images"][:batch_size], top_k, args))
    print_report(args, rows, nms_rows, measured, f"{load_before} -> {load_average()}")


def print_report(
    args: argparse.Namespace, rows: list[list[str]], nms_rows: list[list[str]], measured: dict, load: str
) -> None:
    import onnxruntime as ort

    print(
        f"Scale: shapes_multitask (pre_nms_top_k {PRE_NMS_TOP_K}, max_detections {MAX_DETECTIONS}), MODEL group, "
        f"eval + no_grad ({machine()}; onnxruntime {ort.__version__}, {args.threads} intra-op thread(s); "
        f"load average {load})"
    )
    header = ["size", "batch", "eager ms", "onnxruntime ms", "eager / onnxruntime", "post-processing ms"]
    header += ["post-processing / forward", "eager peak MiB (+forward)", "onnxruntime peak MiB (+forward)"]
    print(markdown_table([*header, "parity (max abs)", "export s"], rows))
    largest = max(args.sizes)
    print(f"\nNMS alone at {largest} px, IoU 0.6, on the best pre_nms_top_k candidates of trained-like outputs:")
    nms_header = ["pre_nms_top_k", "batch", "candidates / image", "kept / image", "rounds", "brickzoo eager ms"]
    nms_header += ["blocks ms", "single matrix ms", "batched_nms ms", "brickzoo eager / batched_nms", "same kept"]
    print(markdown_table(nms_header, nms_rows))
    shares = [measured[largest, b][1] for b in args.batch_sizes]
    print(
        f"target: post-processing <= {POST_TARGET:.0%} of the eager forward at {largest} px with pre_nms_top_k "
        f"{PRE_NMS_TOP_K}; worst {max(shares):.1%} ({verdict(max(shares) <= POST_TARGET)})"
    )
    if 1 in args.batch_sizes:
        ratio = measured[largest, 1][0]
        print(
            f"target: onnxruntime >= {ORT_TARGET}x faster than eager at batch 1 at {largest} px; measured "
            f"{ratio:.2f}x ({verdict(ratio >= ORT_TARGET)})"
        )


if __name__ == "__main__":
    main()
