"""Build the prebuilt models shipped with brickzoo: ``python -m brickzoo.zoo.build`` (what ``make zoo`` runs).

For each entry of :data:`BUILDS` it:

1. trains the entry's zoo config from scratch (with the entry's overrides: a backbone small
   enough for the 10 MB the shipped weights may take, and a held-out ``test`` split) into a
   run folder, as ``brickzoo train`` does;
2. publishes the run as an entry with float16 weights (:func:`~brickzoo.zoo.publish_pretrained`);
3. loads that entry (float16 weights into the float32 model) and evaluates it on the held-out
   split, all of it and its first images (the subset the test suite recomputes);
4. publishes again with those metrics, measured on the stored weights (the float16 rounding
   is deterministic, so the files are the same), into ``brickzoo/zoo/pretrained/<name>/``;
5. rewrites the zoo table of ``README.md`` between ``<!-- pretrained-table:start -->`` and
   ``<!-- pretrained-table:end -->`` from the cards.

Example:
    python -m brickzoo.zoo.build                          # every entry (make zoo)
    python -m brickzoo.zoo.build --only digits_classification --runs /tmp/zoo_runs
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brickzoo.errors import ConfigError, OutputError

README_START = "<!-- pretrained-table:start -->"
README_END = "<!-- pretrained-table:end -->"


@dataclass(frozen=True)
class ZooBuild:
    """One shipped entry: which config it trains and how it is measured.

    Attributes:
        name: the entry's name (its folder in ``brickzoo/zoo/pretrained/``).
        config: the zoo config it trains (a name in ``zoo_configs/``).
        overrides: ``key=value`` changes to the config (backbone size, held-out split, length).
        held_out: the split the card's metrics are measured on (not seen in training or validation).
        subset: how many images from the start of ``held_out`` the card also holds metrics for.
        description: the card's one line.
    """

    name: str
    config: str
    overrides: tuple[str, ...]
    held_out: str
    subset: int
    description: str

    @property
    def command(self) -> str:
        """The command that rebuilds exactly this entry."""
        return f"python -m brickzoo.zoo.build --only {self.name}"


# The backbones stop after their third stage (resnet10t's 512-channel stage 4 holds 3.7 of its
# 4.9 million parameters; shapes_multitask's recipe itself stops there): both entries together then
# store about 6 MB in float16.
BUILDS: tuple[ZooBuild, ...] = (
    ZooBuild(
        name="shapes_multitask",
        config="shapes_multitask",
        overrides=("data.test={num_samples: 512, seed: 200000}",),
        held_out="test",
        subset=64,
        description="classification + segmentation + detection of synthetic shapes (64 px): resnet10t to stride "
        "16, FPN, three heads",
    ),
    ZooBuild(
        name="digits_classification",
        config="digits_classification",
        overrides=("model.backbone.out_indices=[1,2,3]",),
        held_out="test",
        subset=128,
        description="classification of scikit-learn's handwritten digits (8x8 upscaled to 32 px): resnet10t to "
        "stride 16",
    ),
)


def threads_for_load(threads: int | None = None) -> int:
    """Set torch's intra-op threads: ``threads`` if given, else 1 on a machine busier than its cores, else all.

    On a shared machine whose load average exceeds its cores, OpenMP threads that spin while
    waiting for each other make two threads several times slower than one (measured: a training
    step of shapes_multitask took 4.2 s with 2 threads and 0.85 s with 1 at a load of 8 on 2 cores).

    Returns:
        The number of threads set.
    """
    import torch

    cores = os.cpu_count() or 1
    if threads is None:
        busy = hasattr(os, "getloadavg") and os.getloadavg()[0] >= cores
        threads = 1 if busy else cores
    torch.set_num_threads(max(1, threads))
    return torch.get_num_threads()


def _train(build: ZooBuild, run_dir: Path, quiet: bool) -> dict[str, Any]:
    """Train the entry's config from scratch into ``run_dir`` (removed first); returns the final metrics."""
    from brickzoo.training import fit, lock_run_folder, write_config
    from brickzoo.zoo import build_recipe

    if run_dir.is_dir():
        with lock_run_folder(run_dir):  # OutputError when another process trains in it
            shutil.rmtree(run_dir)
    recipe = build_recipe(build.config, build.overrides)
    if build.held_out not in recipe.datasets:
        raise ConfigError(f"zoo build {build.name}: the config has no {build.held_out!r} split to measure on")
    write_config(run_dir, recipe.resolved_config)
    val = recipe.loader("val") if "val" in recipe.datasets else None
    result = fit(recipe.model, recipe.loader("train"), val, recipe.train_config, run_dir=run_dir, quiet=quiet)
    return dict(result.final_metrics)


def build_entry(build: ZooBuild, out_dir: Path, runs_dir: Path, quiet: bool = True) -> Any:
    """Train, publish, measure and publish again one entry into ``out_dir/<name>``; returns its PretrainedEntry."""
    from brickzoo.zoo._pretrained import (
        card_metric_values,
        describe_split,
        evaluate_pretrained,
        load_pretrained,
        publish_pretrained,
    )

    start = time.perf_counter()
    run_dir = runs_dir / build.name
    print(f"== {build.name}: training {build.config} {' '.join(build.overrides)} into {run_dir}", flush=True)
    _train(build, run_dir, quiet)
    trained = time.perf_counter()
    options: dict[str, Any] = {"description": build.description, "command": build.command, "dtype": "float16"}
    with tempfile.TemporaryDirectory(prefix="brickzoo-build-") as staging:
        unmeasured: dict[str, Any] = {"metrics": {}, "metrics_dataset": "a draft", "measure_latency": False}
        draft = publish_pretrained(run_dir, build.name, staging, **unmeasured, **options)
        pretrained = load_pretrained(draft.folder, progress=False)
        full = card_metric_values(evaluate_pretrained(pretrained, build.held_out))
        part = card_metric_values(evaluate_pretrained(pretrained, build.held_out, num_samples=build.subset))
    entry = publish_pretrained(
        run_dir,
        build.name,
        out_dir,
        metrics=full,
        metrics_dataset=describe_split(pretrained.config, build.held_out),
        metrics_subset=(build.subset, part),
        overwrite=True,
        **options,
    )
    if entry.card.files != draft.card.files:
        raise OutputError(f"zoo build {build.name}: the second publish wrote other files than the measured ones")
    done = time.perf_counter()
    print(
        f"== {build.name}: trained in {trained - start:.0f} s, measured and published in {done - trained:.0f} s: "
        f"{entry.folder} ({entry.card.file_size_mb} MB)",
        flush=True,
    )
    for name, value in full.items():
        print(f"   {name:<36} {'n/a' if value is None else f'{value:.4f}'}")
    return entry


def update_readme(readme: Path) -> bool:
    """Replace the zoo table between the README's markers with :func:`~brickzoo.zoo.cards_table` of the shipped cards.

    Returns:
        Whether the README holds the markers (and was updated); False leaves it untouched.
    """
    from brickzoo.zoo import cards_table, pretrained_cards

    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        return False
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    table = cards_table(pretrained_cards().values())
    readme.write_text(f"{head}{README_START}\n{table}\n{README_END}{tail}", encoding="utf-8")
    return True


def readme_table(readme: Path) -> str | None:
    """The text between the README's zoo markers (stripped), or None without them."""
    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        return None
    return text.split(README_START, 1)[1].split(README_END, 1)[0].strip()


def main(argv: Sequence[str] | None = None) -> int:
    from brickzoo.zoo import cards_table, pretrained_cards
    from brickzoo.zoo._pretrained import shipped_dir

    names = [b.name for b in BUILDS]
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", action="append", choices=names, default=None, help="an entry to build, repeatable")
    parser.add_argument("--out", type=Path, default=shipped_dir(), help="where entries go (default: the package)")
    parser.add_argument("--runs", type=Path, default=Path("runs/zoo"), help="training run folders (default: runs/zoo)")
    parser.add_argument("--readme", type=Path, default=Path("README.md"), help="README whose zoo table is updated")
    parser.add_argument("--progress", action="store_true", help="show training progress bars")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: 1 on a busy machine)")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch threads: {threads_for_load(args.threads)} (load average {load:.1f} on {os.cpu_count()} cores)")
    start = time.perf_counter()
    for build in BUILDS:
        if args.only is None or build.name in args.only:
            build_entry(build, args.out, args.runs, quiet=not args.progress)
    print(f"\nbuilt in {time.perf_counter() - start:.0f} s; the zoo:\n")
    print(cards_table(pretrained_cards().values()))
    if args.out.resolve() == shipped_dir().resolve() and args.readme.is_file():
        updated = update_readme(args.readme)
        print(f"\n{args.readme}: " + ("zoo table updated" if updated else f"no {README_START} marker; not updated"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
