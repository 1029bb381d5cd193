"""One torch thread in every trainer / model test (shared machine; reproducible timings)."""
from __future__ import annotations

from typing import Iterator

import pytest

from tiny_reid import one_torch_thread


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield
