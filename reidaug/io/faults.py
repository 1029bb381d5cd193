"""Fault injection for the fault suite (``tests/faults/``, ``bench/faults.py``): inert unless the
environment variable ``REIDAUG_FAULT`` is set, so production runs pay one dict lookup per event.

``REIDAUG_FAULT`` holds one fault, ``ACTION:EVENT:PATTERN:N``:

- ``kill:chunk:export-hdf5:1`` — SIGKILL this process right after it has written its 1st chunk
  file of a stage whose kind matches ``export-hdf5`` (an ``fnmatch`` pattern);
- ``kill:checkpoint:train-camstyle*:2`` — SIGKILL right after the 2nd training checkpoint
  written by a training whose name matches (the GAN loop names its runs
  ``"train-camstyle cyclegan_c0-c1"``, the re-ID trainer ``"train-reid"``);
- ``enospc:write:*chunks*:1`` — the 1st atomic write whose final path matches fails with
  ``ENOSPC`` (no space left on device), as a full disk would, where no small disk can be mounted.

SIGKILL (not an exception) is the point: nothing runs after it — no ``finally``, no atexit, no
flush — exactly as when a machine loses power or the OOM killer strikes.
"""
from __future__ import annotations

import errno
import fnmatch
import os
import signal
import threading

ENV = "REIDAUG_FAULT"
_counts: dict[tuple[str, str], int] = {}
_lock = threading.Lock()


def _matches(event: str, name: str) -> tuple[str, bool]:
    spec = os.environ.get(ENV)
    if not spec:
        return "", False
    try:
        action, want_event, pattern, n = spec.split(":", 3)
        nth = int(n)
    except ValueError:
        raise ValueError(f"{ENV}={spec!r}: expected ACTION:EVENT:PATTERN:N, e.g. kill:chunk:ingest:1") from None
    if want_event != event or not fnmatch.fnmatchcase(name, pattern):
        return action, False
    with _lock:
        _counts[(event, pattern)] = seen = _counts.get((event, pattern), 0) + 1
    return action, seen == nth


def point(event: str, name: str) -> None:
    """A place a fault may strike: ``event`` (``chunk``, ``checkpoint``) just happened in ``name``."""
    action, hit = _matches(event, name)
    if hit and action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)


def check_write(final: str) -> None:
    """Called by the ground-floor writer before it writes ``final``: raises ``ENOSPC`` when an
    ``enospc:write:...`` fault matches."""
    action, hit = _matches("write", str(final))
    if hit and action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC) + " (injected by REIDAUG_FAULT)", str(final))
