"""reidaug.gen.common: the overlapped batch loop, checksums."""
from __future__ import annotations

import threading
import time

import pytest

from reidaug.gen.common import overlapped
from reidaug.io.checkpoint import state_checksum


def test_overlapped_keeps_order_and_overlaps_the_three_steps():
    out, threads = [], set()

    def prepare(i):
        threads.add(("prepare", threading.current_thread().name))
        time.sleep(0.02)
        return i * 2

    def compute(x):
        threads.add(("compute", threading.current_thread().name))
        time.sleep(0.02)
        return x + 1

    def finish(y):
        threads.add(("finish", threading.current_thread().name))
        time.sleep(0.02)
        out.append(y)

    t0 = time.perf_counter()
    timings = overlapped(range(20), prepare, compute, finish)
    wall = time.perf_counter() - t0
    assert out == [2 * i + 1 for i in range(20)]
    assert len({name for _, name in threads}) == 3  # three threads
    assert wall < 0.8 * sum(timings.values())  # 1.2 s of work serially; overlapped ~0.4 s


@pytest.mark.parametrize("where", ["prepare", "compute", "finish"])
def test_overlapped_raises_the_first_error_and_does_not_hang(where):
    def step(name):
        def f(x):
            if name == where and x == 5:
                raise ValueError(f"boom in {name}")
            return x
        return f

    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=f"boom in {where}"):
        overlapped(range(100), step("prepare"), step("compute"), step("finish"), depth=2)
    assert time.perf_counter() - t0 < 5


def test_state_checksum_depends_on_values_names_and_dtypes():
    import torch

    a = {"w": torch.ones(3), "b": torch.zeros(2)}
    assert state_checksum(a) == state_checksum({"b": torch.zeros(2), "w": torch.ones(3)})  # order-free
    assert state_checksum(a) != state_checksum({"w": torch.ones(3) * 2, "b": torch.zeros(2)})
    assert state_checksum(a) != state_checksum({"w2": torch.ones(3), "b": torch.zeros(2)})
    assert state_checksum(a) != state_checksum({"w": torch.ones(3, dtype=torch.float64), "b": torch.zeros(2)})


def test_state_checksum_of_a_channels_last_model_equals_the_contiguous_one():
    """On CUDA the generators run channels_last: a (C, K, 1, 1) weight then counts as contiguous
    with a last stride of K, and a byte view of it failed (first seen on an H200). The checksum
    is a function of the values, not of the memory layout."""
    import torch

    from reidaug.io.checkpoint import state_checksum

    net = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 1), torch.nn.Conv2d(16, 4, 3))
    before = state_checksum(net.state_dict())
    net = net.to(memory_format=torch.channels_last)
    assert net[0].weight.stride()[-1] != 1  # the layout that broke the byte view
    assert state_checksum(net.state_dict()) == before


def test_a_training_summary_says_how_long_how_fast_and_where_it_resumed():
    from reidaug.gen.common import run_record, timing_text

    stats = {"seconds": 120.4, "device": "cpu", "images_per_s": 8.06, "resumed_from": 500, "threads": 2}
    assert timing_text(stats, "img/s", "images_per_s") == " in 120 s on cpu (8.1 img/s), resumed from step 500"
    assert timing_text({**stats, "resumed_from": None}, "img/s", "images_per_s") == " in 120 s on cpu (8.1 img/s)"
    assert timing_text({}, "img/s", "images_per_s") == ""  # a chunk finished by an older version: no record
    assert run_record(stats, "images_per_s") == {"seconds": 120.4, "images_per_s": 8.06, "resumed_from": 500}
    assert run_record({"seconds": 3.0}, "pairs_per_s") == {"seconds": 3.0}
