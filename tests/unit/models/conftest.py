"""Shared setup of the GAN model tests: one torch thread, a test pose, the resume check.

Helpers are fixtures (returning functions) because test modules cannot import a conftest by
name: tests/conftest.py is a ``conftest`` module too.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch

from reidaug.models.base import GANModel, clone_state


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models: one intra-op thread is as fast, and does not spin against other jobs.
    Used by the GAN test modules through ``pytestmark = pytest.mark.usefixtures(...)``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _standing_pose(h: int = 64, w: int = 32) -> np.ndarray:
    """A frontal COCO-17 pose (17, 3) filling an h x w frame, every keypoint present."""
    xy = {0: (16, 6), 1: (17, 5), 2: (15, 5), 3: (18, 6), 4: (14, 6), 5: (21, 14), 6: (11, 14),
          7: (23, 24), 8: (9, 24), 9: (24, 32), 10: (8, 32), 11: (19, 34), 12: (13, 34),
          13: (20, 46), 14: (12, 46), 15: (20, 58), 16: (12, 58)}
    kp = np.zeros((17, 3), np.float32)
    for i, (x, y) in xy.items():
        kp[i] = (x * w / 32, y * h / 64, 1.0)
    return kp


@pytest.fixture
def standing_pose() -> Callable[..., np.ndarray]:
    """``standing_pose(h=64, w=32)``: a frontal COCO-17 pose ``(17, 3)`` in an h x w frame."""
    return _standing_pose


def _resume_matches(make: Callable[[], GANModel], run: Callable[[GANModel, range], None],
                    total: int, first: int, **load_kwargs: Any
                    ) -> tuple[GANModel, GANModel, dict[str, Any]]:
    """Train ``total`` steps straight; train ``first`` steps, snapshot through ``torch.save``,
    rebuild with ``from_state_dict`` and train the rest. Asserts every weight is bit-identical
    and returns ``(straight, resumed, snapshot)`` for further checks."""
    straight = make()
    run(straight, range(total))
    start = make()
    run(start, range(first))
    saved = clone_state(start.state_dict())
    resumed = type(start).from_state_dict(saved, **load_kwargs)
    run(resumed, range(first, total))
    for (name, p), q in zip(straight.nets.state_dict().items(),
                            resumed.nets.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    return straight, resumed, saved


@pytest.fixture
def resume_matches() -> Callable[..., tuple[GANModel, GANModel, dict[str, Any]]]:
    """``resume_matches(make, run, total, first)``: see :func:`_resume_matches`."""
    return _resume_matches
