"""What every bench script shares: where things are, the machine's description, the result file.

Not a script. The bench scripts run as ``python bench/NAME.py``, which puts ``bench/`` on
``sys.path``, so they import this as ``common`` (nothing of it is installed with reidaug).
Results are written atomically by :func:`reidaug.io.atomic.write_json` (indent 2, sorted keys).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from reidaug.io.atomic import write_json

ROOT = Path(__file__).resolve().parents[1]
#: Data and models that are not in the repository (CUHK01, the judge, MoveNet) sit beside it.
SHARED = ROOT.parent / "shared"
RESULTS = ROOT / "bench" / "results"


def now_utc() -> str:
    """The run's start as an ISO time stamp in UTC, to the second (every result's ``date``)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def command_line() -> str:
    """How this process was started: the interpreter's name and ``sys.argv``."""
    return " ".join([Path(sys.executable).name, *sys.argv])


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages: how busy the (shared) machine was."""
    return list(os.getloadavg())


def machine(**extra: Any) -> dict[str, Any]:
    """The keys every result's ``machine`` has (cores, platform, python), plus the script's own."""
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            **extra}


def write_result(out: str | os.PathLike[str], doc: dict[str, Any]) -> None:
    """Write a whole result file (atomically, its folder made) and say so."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_json(out, doc)
    print(f"wrote {out}")


def add_run(out: str | os.PathLike[str], benchmark: str, label: str, entry: dict[str, Any]) -> None:
    """Add (or replace) run ``label`` in a results file of several runs; every other run is kept,
    an unreadable file is started afresh."""
    path = Path(out)
    doc: dict[str, Any] = {"benchmark": benchmark, "runs": {}}
    with contextlib.suppress(OSError, ValueError):
        old = json.loads(path.read_text())
        if isinstance(old.get("runs"), dict):
            doc["runs"] = old["runs"]
    doc["runs"][label] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, doc)
    print(f"wrote {path} (entry {label})")
