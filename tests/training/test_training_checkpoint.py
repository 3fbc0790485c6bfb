"""Atomic checkpoints and exact resumption."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from training_toys import InterruptingLoader, loader, toy_collection, weights

from brickzoo.errors import ConfigError, WeightsError
from brickzoo.training import (
    TrainConfig,
    _checkpoint,
    find_checkpoint,
    fit,
    load_trainer_state,
    read_metrics,
    save_checkpoint,
)


@pytest.fixture(autouse=True)
def one_thread() -> object:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a fixed thread count makes CPU kernels bitwise reproducible
    yield
    torch.set_num_threads(threads)


def config(epochs: int, **more: object) -> TrainConfig:
    # dropout (global RNG), AdamW, warm-up + cosine and clipping all carry state across epochs
    values: dict[str, object] = {"lr": 2e-2, "warmup_steps": 3, "min_lr": 1e-3, "device": "cpu", "grad_clip_norm": 0.5}
    return TrainConfig(epochs=epochs, **{**values, **more})  # type: ignore[arg-type]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different


@pytest.mark.parametrize("more", [{}, {"channels_last": True, "amp": "bf16"}], ids=["default", "channels_last bf16"])
def test_two_plus_two_resumed_epochs_equal_four(tmp_path: Path, more: dict[str, object]) -> None:
    straight = toy_collection()
    settings = config(4, **more)
    fit(straight, loader(48), loader(16, seed=1, shuffle=False), settings, tmp_path / "straight", quiet=True)

    run = tmp_path / "resumed"
    first = toy_collection()
    half = fit(first, loader(48), loader(16, seed=1, shuffle=False), settings, run, stop_after_epoch=2, quiet=True)
    assert half.epochs_completed == 2 and half.checkpoint == run / "checkpoint"
    second = toy_collection(seed=123)  # another initialisation: everything must come from the checkpoint
    rest = fit(second, loader(48), loader(16, seed=1, shuffle=False), settings, run, resume=True, quiet=True)
    assert rest.epochs_completed == 4 and rest.global_step == 12
    assert_same_weights(weights(second), weights(straight))
    # the run folder tells the same story: four epoch lines equal to the uninterrupted run's
    lines, straight_lines = read_metrics(run), read_metrics(tmp_path / "straight")
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4]
    drop = {"seconds", "train/images_per_second"}
    for a, b in zip(lines, straight_lines, strict=True):
        assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}


def test_ctrl_c_inside_a_batch_keeps_the_last_checkpoint_and_resumes_exactly(tmp_path: Path) -> None:
    straight = toy_collection()
    fit(straight, loader(48), None, config(3), tmp_path / "straight", quiet=True)

    run = tmp_path / "interrupted"
    interrupted = toy_collection()
    train = InterruptingLoader(loader(48), at=2 * 3 + 1)  # the second batch of epoch 3
    with pytest.raises(KeyboardInterrupt):
        fit(interrupted, train, None, config(3), run, quiet=True)
    checkpoint = find_checkpoint(run)
    assert checkpoint == run / "checkpoint"
    state = load_trainer_state(checkpoint)
    assert state["epoch"] == 2 and state["global_step"] == 6
    # trainer_state.pt needs no unpickling of arbitrary objects
    raw = torch.load(checkpoint / "trainer_state.pt", weights_only=True)
    assert set(raw["optimizer"]) == {"state", "param_groups"} and raw["rng"]["torch"].dtype == torch.uint8
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".checkpoint")) == []
    # the weights of the checkpoint load into a fresh collection
    fresh = toy_collection(seed=7)
    report = fresh.load_bricks(checkpoint)
    assert report.loaded == ["backbone", "head0/classify"]
    resumed = toy_collection(seed=7)
    fit(resumed, loader(48), None, config(3), run, resume=True, quiet=True)
    assert_same_weights(weights(resumed), weights(straight))


def test_an_interrupted_save_leaves_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    collection = toy_collection()
    save_checkpoint(tmp_path, collection, {"epoch": 1})
    saved = weights(collection)
    with torch.no_grad():
        for p in collection.parameters():
            p.add_(1.0)
    real_replace = os.replace
    for fail_at in (1, 2):  # before the old checkpoint is moved aside, and between the two renames
        calls: list[str] = []

        def replace(src: str, dst: str, fail_at: int = fail_at, calls: list[str] = calls) -> None:
            if Path(dst).name.startswith("checkpoint"):  # the folder renames, not the per-file ones
                calls.append(dst)
                if len(calls) == fail_at:
                    raise KeyboardInterrupt
            real_replace(src, dst)

        monkeypatch.setattr(_checkpoint.os, "replace", replace)
        with pytest.raises(KeyboardInterrupt):
            save_checkpoint(tmp_path, collection, {"epoch": 2})
        monkeypatch.setattr(_checkpoint.os, "replace", real_replace)
        found = find_checkpoint(tmp_path)
        assert found is not None and found.name == ("checkpoint" if fail_at == 1 else "checkpoint.old")
        assert load_trainer_state(found)["epoch"] == 1
        restored = toy_collection(seed=5)
        restored.load_bricks(found)
        assert_same_weights(weights(restored), saved)
        assert not list(tmp_path.glob(".checkpoint-*"))  # the half-written folder was removed
    # the next save succeeds and tidies up
    save_checkpoint(tmp_path, collection, {"epoch": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    assert load_trainer_state(tmp_path / "checkpoint")["epoch"] == 3


def test_resume_needs_a_checkpoint_and_a_fresh_start_refuses_to_overwrite_one(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="resume=True needs a run_dir holding a complete checkpoint"):
        fit(toy_collection(), loader(16), config=config(1), run_dir=tmp_path / "empty", resume=True, quiet=True)
    fit(toy_collection(), loader(16), config=config(1), run_dir=tmp_path / "run", quiet=True)
    with pytest.raises(ConfigError, match="already holds a checkpoint; pass resume=True"):
        fit(toy_collection(), loader(16), config=config(1), run_dir=tmp_path / "run", quiet=True)
    with pytest.warns(UserWarning, match=r"other settings.*'lr': \(0.1, 0.02\)"):
        changed = TrainConfig(epochs=2, lr=0.1, warmup_steps=3, min_lr=1e-3, device="cpu", grad_clip_norm=0.5)
        fit(toy_collection(), loader(16), config=changed, run_dir=tmp_path / "run", resume=True, quiet=True)


def test_a_brick_named_like_the_trainer_state_is_refused(tmp_path: Path) -> None:
    collection = toy_collection()
    backbone = collection["backbone"]
    del collection["backbone"]
    collection["trainer_state"] = backbone
    with pytest.raises(WeightsError, match="would be saved as trainer_state.pt"):
        save_checkpoint(tmp_path, collection, {"epoch": 1})


class IndexedColours(torch.utils.data.Dataset):
    """ColourDataset items plus their index, to see the data order."""

    def __init__(self, n: int) -> None:
        self.inner = loader(n).dataset

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {**self.inner[index], "index": torch.tensor(index)}


class RecordingLoader:
    def __init__(self, inner: torch.utils.data.DataLoader) -> None:
        self.inner, self.sampler = inner, inner.sampler
        self.seen: list[list[int]] = []

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        self.seen.append([])
        for batch in self.inner:
            self.seen[-1] += batch["index"].tolist()
            yield batch


def test_the_data_order_of_an_epoch_depends_on_seed_and_epoch_only() -> None:
    train = RecordingLoader(torch.utils.data.DataLoader(IndexedColours(20), batch_size=5, shuffle=True))
    fit(toy_collection(), train, config=TrainConfig(epochs=3, seed=4, device="cpu"), quiet=True)
    expected = [torch.randperm(20, generator=torch.Generator().manual_seed(4 * 100_003 + e)).tolist() for e in range(3)]
    assert train.seen == expected


class AugmentedColours(torch.utils.data.Dataset):
    """ColourDataset items with random noise added when loaded: the worker's RNG matters."""

    def __init__(self, n: int) -> None:
        self.inner = loader(n).dataset

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.inner[index]
        return {**item, "images": item["images"] + 0.05 * torch.randn(item["images"].shape)}


def test_resume_is_exact_with_a_seeded_loader_and_a_worker_process(tmp_path: Path) -> None:
    def worker_loader() -> torch.utils.data.DataLoader:
        generator = torch.Generator().manual_seed(0)  # like brickzoo.data.make_loader
        return torch.utils.data.DataLoader(
            AugmentedColours(32), batch_size=16, shuffle=True, num_workers=1, generator=generator
        )

    straight = toy_collection()
    fit(straight, worker_loader(), None, config(3), tmp_path / "straight", quiet=True)
    resumed = toy_collection()
    fit(resumed, worker_loader(), None, config(3), tmp_path / "resumed", stop_after_epoch=2, quiet=True)
    resumed = toy_collection(seed=9)
    fit(resumed, worker_loader(), None, config(3), tmp_path / "resumed", resume=True, quiet=True)
    assert_same_weights(weights(resumed), weights(straight))
