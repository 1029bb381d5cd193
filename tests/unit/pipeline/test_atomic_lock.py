from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from reidaug.errors import LockError
from reidaug.pipeline.atomic import atomic_path, is_temp_name, write_json
from reidaug.pipeline.lock import WorkspaceLock


def test_failed_write_leaves_neither_final_nor_temp(tmp_path):
    final = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []


def test_final_appears_only_complete_and_replaces_old(tmp_path):
    final = tmp_path / "meta.json"
    write_json(final, {"v": 1})
    with atomic_path(final) as tmp:
        tmp.write_text('{"v": 2}')
        assert json.loads(final.read_text()) == {"v": 1}  # old content until the rename
        assert is_temp_name(tmp.name) and tmp.parent == final.parent
    assert json.loads(final.read_text()) == {"v": 2}


def test_atomic_folder(tmp_path):
    final = tmp_path / "dataset"
    with pytest.raises(ValueError):
        with atomic_path(final) as tmp:
            tmp.mkdir()
            (tmp / "a.jpg").write_bytes(b"x")
            raise ValueError
    assert list(tmp_path.iterdir()) == []
    with atomic_path(final) as tmp:
        tmp.mkdir()
        (tmp / "a.jpg").write_bytes(b"x")
    assert (final / "a.jpg").read_bytes() == b"x"


def test_lock_names_the_holder_and_is_released(tmp_path):
    with WorkspaceLock(tmp_path):
        with pytest.raises(LockError, match=f"PID {os.getpid()}"):
            WorkspaceLock(tmp_path).acquire()
    with WorkspaceLock(tmp_path):  # released: can be taken again
        pass
    assert not (tmp_path / ".lock").exists()


def test_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    (tmp_path / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": time.time()}))
    with caplog.at_level("WARNING"):
        with WorkspaceLock(tmp_path):
            assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    assert "taking it over" in caplog.text


def test_wait_blocks_until_the_holder_releases(tmp_path):
    holder = WorkspaceLock(tmp_path)
    holder.acquire()
    threading.Timer(0.5, holder.release).start()
    t0 = time.monotonic()
    with WorkspaceLock(tmp_path, wait=True, poll_s=0.05):
        assert time.monotonic() - t0 >= 0.4
