"""Input checks shared by the eval modules: positive sizes, images, per-image integer labels, origins."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from reidaug.errors import ConfigError, DataError


def check_positive_int(value: Any, name: str, note: str = "") -> None:
    """Raise ConfigError ``<name> must be a positive integer<note>; got <value>.`` unless it is one."""
    if not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a positive integer{note}; got {value!r}.")


def check_rgb(img: Any, where: str) -> np.ndarray:
    """``img`` as an RGB uint8 (H, W, 3) array, or a DataError naming ``where``."""
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8 or 0 in arr.shape:
        raise DataError(
            f"{where}: expected an RGB uint8 array (H, W, 3); found dtype {arr.dtype}, shape "
            f"{arr.shape}. Fix: decode images to RGB uint8 (reidaug.data.images.decode_image)."
        )
    return arr


def image_list(images: Any, name: str) -> list[np.ndarray]:
    """A list of images from a list or an (N, H, W, 3) array."""
    if isinstance(images, np.ndarray) and images.ndim != 4:
        raise DataError(
            f"{name}: expected a list of (H, W, 3) images or an (N, H, W, 3) array; found an "
            f"array of shape {images.shape}."
        )
    return list(images)


def int_array(x: Any, name: str, n: int) -> np.ndarray:
    """One integer per image, shape (n,), as int64."""
    arr = np.asarray(x)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DataError(f"{name}: expected shape ({n},), one per image; found shape {arr.shape}.")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{name}: expected integers; found dtype {arr.dtype}.")
    return arr.astype(np.int64)


def refuse_any(bad: np.ndarray, name: str, what: str, example: Callable[[int], str], fix: str) -> None:
    """Raise ``name: <count> <what>, e.g. <example(first bad index)>. Fix: <fix>`` if any is bad."""
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{name}: {int(bad.sum())} {what}, e.g. {example(i)}. Fix: {fix}")


def check_origins(origins: np.ndarray, fake_pids: np.ndarray, real_pids: np.ndarray) -> np.ndarray:
    """Boolean mask of fakes with an origin; raises when an origin is out of range or of
    another identity (then excluding it would silently exclude nothing)."""
    has = origins >= 0
    refuse_any((origins < -1) | (origins >= len(real_pids)), "fake_origins",
               f"origins are outside -1..{len(real_pids) - 1} (the real images)",
               lambda i: f"fake {i} has origin {int(origins[i])}",
               "origins index the real arrays (-1 = none); remap HDF5 row numbers with read_generated_h5.")
    mismatch = has & (fake_pids >= 0) & (real_pids[np.where(has, origins, 0)] != fake_pids)
    refuse_any(mismatch, "fake_pids", "fakes have another pid than their origin image",
               lambda i: f"fake {i}: pid {int(fake_pids[i])}, origin {int(origins[i])} has pid "
                         f"{int(real_pids[origins[i]])}",
               "pass the original (not relabelled) pids of both.")
    return has
