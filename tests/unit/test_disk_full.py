"""Disk full (issue 14, item 6): writers check free space before HDF5 or torch.save can hit ENOSPC
(h5py printed 12-26 tracebacks, then segfaulted closing the file; torch raised "unexpected pos"),
and say so in one line. The free space is faked here; a 3 MB tmpfs gave the same one-line error,
exit 1, and the run resumed once the workspace had room (BENCHMARKS.md)."""
from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
import torch

import reidaug.io.atomic as atomic
from reidaug.data.h5format import H5Writer
from reidaug.errors import DataError
from reidaug.io.checkpoint import save_torch
from reidaug.pipeline.context import write_h5_chunk

Usage = collections.namedtuple("Usage", "total used free")


@pytest.fixture
def full_disk(monkeypatch):
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda path: Usage(10 << 20, 10 << 20, 200 << 10))


def test_a_chunk_is_refused_before_hdf5_writes(tmp_path, full_disk):
    with pytest.raises(DataError, match=r"no space left for a chunk file: writing .*00000.h5 needs about 3.8 MiB"):
        write_h5_chunk(tmp_path / "chunks" / "00000.h5", {"x": np.zeros((1000, 1000), np.float32)})
    assert not list(tmp_path.rglob("*.h5*"))  # nothing half-written, no temp left


def test_the_export_is_refused_and_leaves_no_temp(tmp_path, full_disk):
    with pytest.raises(DataError, match="no space left for the HDF5 export"):
        with H5Writer(tmp_path / "d.h5", encoding="raw", image_size=(64, 32)) as w:
            w.append("train", images=np.zeros((600, 64, 32, 3), np.uint8), pid=np.arange(600) % 5,
                     camid=np.zeros(600, int), label=np.arange(600) % 5)
    assert not list(tmp_path.iterdir())


def test_a_checkpoint_is_refused_before_torch_save(tmp_path, full_disk):
    with pytest.raises(DataError, match="no space left for a checkpoint"):
        save_torch(tmp_path / "checkpoint.pt", {"w": torch.zeros(1 << 20)})
    assert not list(tmp_path.iterdir())


def test_enospc_during_torch_save_is_named(tmp_path, monkeypatch):
    def failing_save(obj, f):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(DataError, match="the disk is probably full.*resumes from the last checkpoint"):
        save_torch(tmp_path / "checkpoint.pt", {"w": torch.zeros(4)})
    assert not list(tmp_path.iterdir())


def test_enospc_of_a_small_file_is_one_clear_error(tmp_path, monkeypatch):
    import errno
    import os

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "fsync", no_space)
    with pytest.raises(DataError, match="no space left on device while writing a file to .*x.json"):
        atomic.write_json(tmp_path / "x.json", {"a": 1})
    assert not list(Path(tmp_path).iterdir())
