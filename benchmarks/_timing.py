"""Shared timing helpers for the benchmarks: interleaved rounds, medians, tables."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import torch


def interleaved_medians(
    candidates: dict[str, Callable[[], object]], calls: int, rounds: int, warmup: int = 50
) -> dict[str, float]:
    """Median seconds per call of each candidate, timing them in alternating rounds.

    Interleaving the candidates round by round spreads any drift of the machine (frequency,
    other processes) over all of them instead of biasing whichever ran last.
    """
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter() - start) / calls)
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
