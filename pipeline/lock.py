"""A workspace lock: one ``reidaug run`` per workspace at a time.

The lock is a file created with O_EXCL holding the owner's PID, host and start time. A second
run fails fast naming that PID (or waits with ``wait=True``). A lock whose process is gone (same
host, PID dead or reused by a younger process) is stale: it is taken over with a warning.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

from reidaug.errors import LockError

log = logging.getLogger(__name__)


def _process_started(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # psutil missing, or no such process
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkspaceLock:
    def __init__(self, workspace: Path, *, wait: bool = False, poll_s: float = 0.5, timeout_s: float | None = None):
        self.path = Path(workspace) / ".lock"
        self.wait = wait
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self._held = False

    def _owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def _is_stale(self, owner: dict | None) -> bool:
        if owner is None:
            # unreadable: a writer may be between create and write; give it a moment
            try:
                return time.time() - self.path.stat().st_mtime > 5
            except FileNotFoundError:
                return True
        if owner.get("host") != socket.gethostname():
            return False  # cannot check another machine's processes
        pid = int(owner.get("pid", -1))
        if pid <= 0 or not _alive(pid):
            return True
        started = _process_started(pid)
        return started is not None and started > float(owner.get("started", 0)) + 1.0  # PID reused

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if self._is_stale(owner):
                    log.warning("workspace lock %s was left by process %s, which is gone; taking it over",
                                self.path, (owner or {}).get("pid", "?"))
                    try:
                        os.unlink(self.path)
                    except FileNotFoundError:
                        pass
                    continue
                if not self.wait or (deadline is not None and time.monotonic() > deadline):
                    o = owner or {}
                    raise LockError(
                        f"workspace {self.path.parent} is in use by another reidaug run "
                        f"(PID {o.get('pid', '?')} on {o.get('host', '?')}, since "
                        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(o.get('started', 0)))}). "
                        "Wait for it to finish, re-run with --wait, or use another --workspace."
                    )
                time.sleep(self.poll_s)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self._held = True
            return

    def release(self) -> None:
        if self._held:
            try:
                owner = self._owner()
                if owner is None or owner.get("pid") == os.getpid():
                    os.unlink(self.path)
            except FileNotFoundError:
                pass
            self._held = False

    def __enter__(self) -> "WorkspaceLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
