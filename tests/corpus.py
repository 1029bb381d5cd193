"""Test inputs shared by several test modules (tests/ is on sys.path via setup.cfg)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def jpeg(path: Path, seed: int = 0, shape=(32, 16, 3)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    path.write_bytes(cv2.imencode(path.suffix or ".jpg", pixels)[1].tobytes())
    return path


def bad_corpus(root: Path) -> dict[str, str]:
    """Build every kind of bad (and awkward) input; return path -> expected outcome."""
    expected: dict[str, str] = {}

    def add(rel: str, outcome: str) -> Path:
        expected[rel] = outcome
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        return root / rel

    jpeg(add("0001/0001_c1s1_000001_00.jpg", "record"))
    good = (root / "0001/0001_c1s1_000001_00.jpg").read_bytes()
    add("0001/0001_c1s1_000002_00.jpg", "truncated").write_bytes(good[: len(good) // 2])
    add("0001/0001_c2s1_000003_00.jpg", "zero-byte").write_bytes(b"")
    add("0001/0001_c2s1_000004_00.jpg", "not-an-image").write_text("a text file named .jpg\n")
    rgba = np.random.default_rng(1).integers(0, 256, (16, 8, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(add("0002/0002_c1s1_000001_00.png", "rgba->rgb"))
    cv2.imwrite(str(add("0002/0002_c1s1_000002_00.png", "16bit->8bit")),
                np.full((16, 8, 3), 40000, np.uint16))
    jpeg(add("0002/0002_c2s1_000003_00.jpg", "grayscale->rgb"), shape=(16, 8))
    palette = Image.fromarray(rgba[..., :3]).convert("P")
    palette.save(add("0002/0002_c3s1_000004_00.png", "palette->rgb"))
    cv2.imwrite(str(add("0003/0003_c1s1_000001_00.jpg", "too-large")),
                np.zeros((10_000, 10_000), np.uint8))
    add("0003/0003_c2s1_000002_00.jpg", "dangling-symlink").symlink_to(root / "deleted.jpg")
    jpeg(add("ñandú/0001_c1s1_000001_00.jpg", "record"))
    jpeg(add("0004/bb.jpg", "unparseable-name"))
    add("0004/notes.txt", "not-an-image-extension").write_text("notes")
    add("0004/Thumbs.db", "not-an-image-extension").write_bytes(b"\0" * 8)
    jpeg(add("loose_c1s1_000001_00.jpg", "unparseable-name"))  # not in an identity folder
    add("0004/0004_c1s1_000009_00.jpg", "not-a-file").mkdir()  # a folder named like an image
    jpeg(add("0004/0004_c2s1_000010_00.jpg", "record"), shape=(1, 1, 3))  # kept (min_size quarantines it)
    return expected


