from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from reidaug.errors import LockError
from reidaug.io.atomic import atomic_path, is_temp_name, write_json
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
    assert (tmp_path / ".lock").read_text() == ""  # released cleanly: no owner recorded


def test_lock_of_a_killed_process_is_taken_over(tmp_path, caplog):
    code = ("import sys, time; from reidaug.pipeline.lock import WorkspaceLock; "
            f"WorkspaceLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(LockError, match=f"PID {holder.pid}"):
        WorkspaceLock(tmp_path).acquire()
    holder.kill()  # SIGKILL: no chance to release
    holder.wait()
    with caplog.at_level("WARNING"):
        with WorkspaceLock(tmp_path):
            assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    assert "taking it over" in caplog.text


def test_concurrent_takeover_never_admits_two_holders(tmp_path):
    # a stale owner record, then four processes race for the lock; holders must never overlap
    (tmp_path / ".lock").write_text(json.dumps({"pid": 999999, "host": "x", "started": 0}))
    code = ("import time; from reidaug.pipeline.lock import WorkspaceLock; from reidaug.errors import LockError\n"
            f"l = WorkspaceLock({str(tmp_path)!r})\n"
            "try:\n    l.acquire(); t0 = time.time(); time.sleep(0.5); t1 = time.time(); l.release()\n"
            "    print('won', t0, t1, flush=True)\n"
            "except LockError:\n    print('lost', flush=True)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate()[0].split() for p in procs]
    wins = sorted((float(o[1]), float(o[2])) for o in outs if o[0] == "won")
    assert len(wins) >= 1 and len(wins) + sum(o[0] == "lost" for o in outs) == 4
    for (_, end), (start, _) in zip(wins, wins[1:]):
        assert start >= end, "two processes held the workspace lock at once"


def test_wait_blocks_until_the_holder_releases(tmp_path):
    holder = WorkspaceLock(tmp_path)
    holder.acquire()
    threading.Timer(0.5, holder.release).start()
    t0 = time.monotonic()
    with WorkspaceLock(tmp_path, wait=True, poll_s=0.05):
        assert time.monotonic() - t0 >= 0.4
