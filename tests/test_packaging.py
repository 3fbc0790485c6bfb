"""The built wheel holds the whole package and every zoo config, and works installed outside a checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "brickzoo", "zoo_configs")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built offline from a copy of the sources (the checkout gets no build/ or egg-info)."""
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist), str(source)]
    result = subprocess.run(build, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = dist.glob("brickzoo-*.whl")
    return built


def test_the_wheel_holds_every_config_and_module(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {
        f"brickzoo/zoo_configs/{p.relative_to(ROOT / 'zoo_configs').as_posix()}"
        for p in ROOT.glob("zoo_configs/**/*.yaml")
    }
    assert len(configs) >= 5 and configs <= names, sorted(configs - names)
    modules = {p.relative_to(ROOT).as_posix() for p in ROOT.glob("brickzoo/**/*.py")}
    assert modules <= names, sorted(modules - names)
    assert "brickzoo/py.typed" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "brickzoo = brickzoo.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_installed_wheel_lists_and_draws_the_configs_from_another_folder(wheel: Path, tmp_path: Path) -> None:
    target, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    install = [sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "--no-deps", "--no-index"]
    result = subprocess.run(
        [*install, "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    env = {**os.environ, "PYTHONPATH": str(target), "PYTHONDONTWRITEBYTECODE": "1"}
    script = target / "bin" / "brickzoo"

    def run(*args: str) -> str:
        result = subprocess.run(
            [str(script), *args], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    listing = run("list")
    # the configs come from the installed package, not from the checkout: the wheel's code was imported
    assert f"configs (from {target / 'brickzoo' / 'zoo_configs'}):" in listing
    assert str(ROOT) not in listing
    for name in ("shapes_multitask", "shapes_detection", "digits_classification", "shapes_multitask_torchvision"):
        assert f"  {name} " in listing
    graph = run("graph", "shapes_multitask", "--groups", "MODEL")
    assert graph.startswith("flowchart LR") and "detect/head" in graph
