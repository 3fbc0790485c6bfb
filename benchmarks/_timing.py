"""Shared timing helpers for the benchmarks: interleaved rounds, medians, tables."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import torch


def interleaved_medians(
    candidates: dict[str, Callable[[], object]],
    calls: int,
    rounds: int,
    warmup: int = 50,
    pause: float = 0.0,
    settle: int = 0,
) -> dict[str, float]:
    """Median seconds per call of each candidate, timing them in alternating rounds.

    Interleaving the candidates round by round spreads any drift of the machine (frequency,
    other processes) over all of them instead of biasing whichever ran last.

    ``pause`` seconds of sleep (untimed) follow every block of calls. Give one when the
    candidates use different thread pools (torch's OpenMP, onnxruntime's, inductor kernels'):
    a pool's threads keep spinning for a while after its last call and would otherwise steal
    the cores from the candidate timed next. ``settle`` untimed calls then open every block,
    so that the timed calls find the candidate's threads awake again.
    """
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
        time.sleep(pause)
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            for _ in range(settle):
                fn()
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter() - start) / calls)
            time.sleep(pause)
    return {name: statistics.median(values) for name, values in samples.items()}


def machine() -> str:
    return (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s), "
        f"python {platform.python_version()}, torch {torch.__version__}"
    )


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def load_average() -> str:
    """The 1-minute load average (``/proc/loadavg``), to judge how noisy a run was; ``n/a`` elsewhere."""
    try:
        with open("/proc/loadavg") as file:
            return file.read().split()[0]
    except OSError:
        return "n/a"


def verdict(met: bool) -> str:
    """The word a target line ends with."""
    return "met" if met else "MISSED"
