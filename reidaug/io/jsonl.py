"""The one JSON-lines log of training metrics (GAN losses, the re-ID trainer's log).

Each line is ``{"step": n, ...}`` with sorted keys. Appends write whole lines; a line cut by a
kill ends the readable log (everything after it is suspect). A resumed run calls
``truncate(step)`` with its checkpoint's step, so its log equals an uninterrupted run's.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reidaug.io.atomic import write_text


class JsonlLog:
    """A JSON-lines log at ``path`` (its folder is created)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def records(self) -> list[dict[str, Any]]:
        """Every whole line, in order, up to the first damaged one."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a kill: everything after it is suspect
        return out

    def truncate(self, step: int) -> None:
        """Keep the records with ``step <= step`` (those a checkpoint at ``step`` covers)."""
        keep = [r for r in self.records() if int(r.get("step", 0)) <= step]
        write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
