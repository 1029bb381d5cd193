"""A workspace lock: one ``reidaug run`` per workspace at a time.

``<workspace>/.lock`` is held with ``fcntl.flock``, which the kernel releases when the holder
dies (even by SIGKILL), so there is no stale-lock race: a lock left by a dead process is simply
free. The file also records the holder's PID, host and start time, so a second run fails fast
naming that PID (or waits with ``wait=True``). Not for network file systems without flock.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from reidaug.errors import LockError

log = logging.getLogger(__name__)


class WorkspaceLock:
    def __init__(self, workspace: Path, *, wait: bool = False, poll_s: float = 0.5, timeout_s: float | None = None):
        self.path = Path(workspace) / ".lock"
        self.wait = wait
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self._fd: int | None = None

    def _owner(self, fd: int) -> dict | None:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            data = os.read(fd, 4096)
            return json.loads(data) if data.strip() else None
        except (OSError, ValueError):
            return None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not self.wait or (deadline is not None and time.monotonic() > deadline):
                        o = self._owner(fd) or {}
                        raise LockError(
                            f"workspace {self.path.parent} is in use by another reidaug run "
                            f"(PID {o.get('pid', '?')} on {o.get('host', '?')}, since "
                            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(o.get('started', 0)))}). "
                            "Wait for it to finish, re-run with --wait, or use another --workspace."
                        ) from None
                    time.sleep(self.poll_s)
            previous = self._owner(fd)
            if previous and previous.get("pid") not in (None, os.getpid()):
                log.warning("workspace lock %s was left by process %s, which is gone; taking it over",
                            self.path, previous.get("pid"))
            me = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, me, 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # an empty lock file = released cleanly
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "WorkspaceLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
