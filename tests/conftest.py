"""Shared fixtures: where ../shared is, and markers that skip with a reason."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# ../shared beside the project root (CI and developer machines); REIDAUG_SHARED overrides.
SHARED_DIR = Path(os.environ.get("REIDAUG_SHARED", PROJECT_ROOT.parent / "shared"))


@pytest.fixture(autouse=True, scope="session")
def _file_hash_cache(tmp_path_factory):
    """Dataset file digests (reidaug.io.hashcache) go to a temporary folder, not the user's ~/.cache."""
    old = os.environ.get("REIDAUG_HASH_CACHE")
    os.environ["REIDAUG_HASH_CACHE"] = str(tmp_path_factory.mktemp("file-hashes"))
    yield
    if old is None:
        os.environ.pop("REIDAUG_HASH_CACHE", None)
    else:
        os.environ["REIDAUG_HASH_CACHE"] = old


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ../shared folder with real data and models; skip (with why) where it is absent."""
    if not (SHARED_DIR / "data").is_dir():
        pytest.skip(f"real data not found at {SHARED_DIR} (set REIDAUG_SHARED to its path)")
    return SHARED_DIR


def _shared_data(shared_dir: Path, name: str) -> Path:
    path = shared_dir / "data" / name
    if not path.is_dir():
        pytest.skip(f"{name} not found at {path}")
    return path


@pytest.fixture(scope="session")
def cuhk01_dir(shared_dir: Path) -> Path:
    return _shared_data(shared_dir, "cuhk01")


@pytest.fixture(scope="session")
def market_samples_dir(shared_dir: Path) -> Path:
    return _shared_data(shared_dir, "market_samples")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - torch missing or broken: treat as no GPU
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs CUDA; none on this machine")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
