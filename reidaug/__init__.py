"""reidaug: offline, cached and resumable data augmentation for person re-identification."""
from __future__ import annotations

__version__ = "0.1.0"
