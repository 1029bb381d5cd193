"""Regression: forked DataLoader workers after multithreaded OpenCV in the parent.

OpenCV's pthreads pool (parallel_impl.cpp) keeps one condition variable per worker thread. A
forked child inherits the pool's bookkeeping but not its threads; when the parent's workers
were asleep on those condition variables, ``cv2.setNumThreads(1)`` in the child tears the pool
down and blocks for ever in ``pthread_cond_destroy`` (glibc waits for waiters that do not exist
in the child). ReidH5Dataset's workers used to call exactly that. The test runs the scenario in
a subprocess with a timeout, so a regression fails instead of hanging the suite.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from reidaug.data.h5format import H5Writer

PROJECT_ROOT = Path(__file__).resolve().parents[3]

_SCRIPT = textwrap.dedent("""
    import sys, time
    import cv2, numpy as np, torch
    from torch.utils.data import DataLoader
    from reidaug.data.torchdata import ReidH5Dataset, build_transforms, reid_collate

    cv2.setNumThreads(4)  # a pool with worker threads even on a 1-core machine
    big = np.random.default_rng(0).integers(0, 256, (1200, 1200, 3), dtype=np.uint8)
    for _ in range(3):
        cv2.resize(big, (500, 500), interpolation=cv2.INTER_AREA)  # parallel_for_: threads start
    time.sleep(0.5)  # past OpenCV's active wait: the workers now sleep on their condition variables
    ds = ReidH5Dataset(sys.argv[1], "train", transform=build_transforms(48, 24, train=True))
    loader = DataLoader(ds, batch_size=4, shuffle=False, num_workers=2, multiprocessing_context="fork",
                        collate_fn=reid_collate, timeout=15)
    seen = sum(int(b["img"].shape[0]) for _ in range(2) for b in loader)  # two epochs, new workers each
    print("batches ok", seen, "parent cv2 threads", cv2.getNumThreads())
""")


def test_forked_workers_after_multithreaded_cv2_in_the_parent_do_not_hang(tmp_path: Path) -> None:
    data = tmp_path / "d.h5"
    rng = np.random.default_rng(0)
    with H5Writer(data, image_size=(32, 16)) as w:
        w.append("train", images=rng.integers(0, 256, (16, 32, 16, 3), dtype=np.uint8),
                 pid=np.repeat(np.arange(4), 4), camid=np.tile([0, 1], 8), label=np.repeat(np.arange(4), 4))
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), OMP_NUM_THREADS="1")
    try:
        proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(data)], env=env, cwd=PROJECT_ROOT,
                              capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired as exc:  # the bug: a worker blocked in cv2.setNumThreads
        raise AssertionError(f"DataLoader with forked workers hung (stderr: {exc.stderr!r})") from None
    assert proc.returncode == 0, proc.stderr
    # 32 images in all, and the parent's OpenCV keeps the thread count it asked for
    assert "batches ok 32 parent cv2 threads 4" in proc.stdout, proc.stdout + proc.stderr
