"""Decode one image file into the project's in-memory form, or say exactly why it cannot be.

``decode_image(path)`` returns an RGB ``uint8`` array of shape ``(H, W, 3)`` plus the named
conversions that produced it, or raises :class:`ImageCheckError` whose ``.reason`` is one of
:data:`IMAGE_REASONS`. It follows torchreid's ``read_image`` contract (every re-ID image is
read as 3-channel RGB) but, unlike it, never retries forever on a bad file and never lets a
truncated file through.

How a file is read (one ``read`` of its bytes, so non-ASCII paths work, unlike ``cv2.imread``):

1. ``missing`` / ``dangling-symlink`` / ``unreadable`` / ``zero-byte`` from the file system.
2. ``truncated``: a JPEG must have its EOI marker (``FF D9``) after its last start-of-scan
   (``FF DA``) marker; a PNG must have its ``IEND`` chunk. This is checked on the bytes, not
   left to the decoder: OpenCV 4.x decodes a truncated JPEG *silently*, filling the missing
   rows with grey, and libjpeg only warns. (OpenCV 5 returns ``None`` instead; the byte check
   gives the same answer on both.) Bytes after EOI/IEND (camera trailers) are accepted.
3. ``not-an-image``: Pillow cannot identify the header (a text file named ``.jpg``), or the
   decoder rejects the pixel data, or the pixel type is not 8/16-bit integer.
4. ``too-large``: width x height from the *header* (Pillow's lazy ``Image.open``, which reads
   no pixels) is over ``max_pixels`` (default 50 million). The pixels are never decoded, so a
   10000 x 10000 image (100 M pixels, 300 MB as RGB) costs a few kB of memory to reject.
5. Decoding by ``cv2.imdecode(..., IMREAD_UNCHANGED)`` (libjpeg-turbo / libpng): it keeps
   16-bit samples (Pillow silently drops 16-bit RGB PNGs to 8 bits and reports mode ``RGB``)
   and is the fastest decoder installed. Pillow is used only for the header, which OpenCV
   cannot read without decoding.

Conversions, each named in ``DecodedImage.conversions`` in the order applied:

- ``16bit->8bit``: ``round(v * 255 / 65535)`` (a scale, not a truncation of the high byte).
- ``palette->rgb``: a palette (``P``) image expanded through its palette (done by libpng).
- ``cmyk->rgb``: a CMYK/YCCK JPEG converted by libjpeg.
- ``grayscale->rgb``: one channel repeated three times.
- ``rgba->rgb``: alpha *composited on black* (``rgb * a / 255``, rounded), not dropped, so
  whatever colour hides under fully transparent pixels (often garbage) cannot leak into the
  crop; an opaque image is unchanged either way. Grey+alpha gives both ``grayscale->rgb``
  and ``rgba->rgb``.
"""
from __future__ import annotations

import errno
import io
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from reidaug.errors import DataError
from reidaug.io.atomic import write_bytes

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 50_000_000

#: Every reason an image can fail the check, with what it means (copied into the docs).
IMAGE_REASONS: dict[str, str] = {
    "missing": "no file at the path",
    "dangling-symlink": "the path is a symbolic link whose target does not exist",
    "zero-byte": "the file is empty",
    "not-an-image": "the bytes are not an image format Pillow/OpenCV can decode",
    "truncated": "the file ends before its end marker (JPEG EOI / PNG IEND)",
    "too-large": "width x height from the header is over max_pixels",
    "unreadable": "the file exists but cannot be read (permission, I/O error, a folder)",
}

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_EOI = b"\xff\xd9"
_JPEG_SOS = b"\xff\xda"
_PNG_IEND = b"IEND\xaeB`\x82"  # chunk type + its fixed CRC


class ImageCheckError(DataError):
    """An image file failed the check; ``reason`` is a key of :data:`IMAGE_REASONS`."""

    def __init__(self, path: Path | str, reason: str, detail: str) -> None:
        if reason not in IMAGE_REASONS:  # a bug in this module, not user input
            raise ValueError(f"unknown image check reason {reason!r}")
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"image {self.path}: {reason}: {detail}")


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image: ``rgb`` is (H, W, 3) uint8 RGB; ``conversions`` name what was done."""

    rgb: np.ndarray  # (H, W, 3) uint8, RGB order
    conversions: tuple[str, ...]
    original_mode: str  # Pillow's mode from the header ("RGB", "L", "P", "RGBA", "I;16", ...)
    data: bytes = b""  # the file's bytes, read once (ingest keeps them when no conversion was needed)

    @property
    def container(self) -> str:
        """"jpeg", "png" or "other", from the magic bytes."""
        if self.data.startswith(b"\xff\xd8"):
            return "jpeg"
        if self.data.startswith(b"\x89PNG"):
            return "png"
        return "other"


def decode_image(path: Path | str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Read and decode ``path`` into RGB uint8, or raise :class:`ImageCheckError`."""
    path = Path(path)
    data = _read_bytes(path)
    if not data:
        raise ImageCheckError(path, "zero-byte", "the file is empty (0 bytes); expected an image")
    _check_complete(path, data)
    width, height, mode = _read_header(path, data)
    if width * height > max_pixels:
        raise ImageCheckError(
            path,
            "too-large",
            f"{width}x{height} = {width * height:,} pixels, over max_pixels={max_pixels:,}; "
            "not decoded. Downscale the image, or raise max_pixels if it is really a crop",
        )
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.size == 0:
        raise ImageCheckError(
            path,
            "not-an-image",
            f"the header says {mode} {width}x{height} but OpenCV could not decode the pixels "
            f"({len(data):,} bytes); re-export the file",
        )
    rgb, conversions = _to_rgb8(path, pixels, mode)
    if pixels.dtype == np.uint16 and mode in ("RGB", "RGBA"):
        mode = f"{mode};16"  # Pillow reports 16-bit colour PNGs as 8-bit modes
    return DecodedImage(rgb=rgb, conversions=conversions, original_mode=mode, data=data)


def _read_bytes(path: Path) -> bytes:
    if not os.path.lexists(path):
        raise ImageCheckError(path, "missing", "no such file; expected an image at this path")
    if path.is_symlink() and not path.exists():
        target = os.readlink(path)
        raise ImageCheckError(
            path, "dangling-symlink", f"symbolic link to {target!r}, which does not exist"
        )
    try:
        # np.fromfile would do too; plain open() also handles non-ASCII names and gives bytes.
        with open(path, "rb") as handle:
            return handle.read()
    except IsADirectoryError:
        raise ImageCheckError(path, "unreadable", "is a folder; expected an image file") from None
    except PermissionError as exc:
        raise ImageCheckError(
            path, "unreadable", f"permission denied ({exc.strerror}); check the file's mode"
        ) from None
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, "OSError")
        raise ImageCheckError(path, "unreadable", f"I/O error {name}: {exc.strerror}") from None


def _check_complete(path: Path, data: bytes) -> None:
    """Raise ``truncated`` when a JPEG or PNG stops before its end marker."""
    if data.startswith(_JPEG_MAGIC):
        # Entropy-coded data escapes 0xFF as FF 00, so FF D9 after the last SOS is the real
        # EOI; an EXIF thumbnail's own EOI sits before the main scan and does not count.
        last_sos = data.rfind(_JPEG_SOS)
        if last_sos < 0 or data.rfind(_JPEG_EOI) < last_sos:
            found = "no start-of-scan marker" if last_sos < 0 else "no EOI after the last scan"
            raise ImageCheckError(
                path,
                "truncated",
                f"JPEG of {len(data):,} bytes has {found}; expected it to end with FF D9. "
                "The file was cut short (interrupted copy or download): fetch it again",
            )
    elif data.startswith(_PNG_MAGIC) and data.rfind(_PNG_IEND) < 0:
        raise ImageCheckError(
            path,
            "truncated",
            f"PNG of {len(data):,} bytes has no IEND chunk; expected one at the end. "
            "The file was cut short (interrupted copy or download): fetch it again",
        )


def _read_header(path: Path, data: bytes) -> tuple[int, int, str]:
    """Width, height and mode from the header; Pillow's ``open`` reads no pixel data."""
    try:
        with warnings.catch_warnings():
            # We apply our own max_pixels below; Pillow's bomb warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                return int(width), int(height), str(image.mode)
    except Image.DecompressionBombError as exc:
        raise ImageCheckError(path, "too-large", f"Pillow refuses the header: {exc}") from None
    except UnidentifiedImageError:
        head = data[:16]
        raise ImageCheckError(
            path,
            "not-an-image",
            f"{len(data):,} bytes starting {head!r} are not a known image format; "
            "expected JPEG/PNG/BMP/WebP/TIFF. Remove the file or replace it with the image",
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's ways of saying "bad header"
        raise ImageCheckError(
            path, "not-an-image", f"the image header cannot be parsed: {exc}"
        ) from None


def _to_rgb8(path: Path, pixels: np.ndarray, mode: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """OpenCV's (H, W[, C]) BGR(A) array of uint8/uint16 -> (H, W, 3) uint8 RGB."""
    conversions: list[str] = []
    if pixels.dtype == np.uint16:
        # Round to nearest instead of >> 8, so 65535 -> 255 and 32896 -> 128.
        pixels = ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        conversions.append("16bit->8bit")
    elif pixels.dtype != np.uint8:
        raise ImageCheckError(
            path,
            "not-an-image",
            f"pixel type {pixels.dtype} (mode {mode}); expected 8- or 16-bit integer samples. "
            "Convert the file to 8-bit PNG/JPEG",
        )
    if mode in ("P", "PA"):
        conversions.append("palette->rgb")  # libpng already expanded it to BGR(A)
    elif mode == "CMYK":
        conversions.append("cmyk->rgb")  # libjpeg already converted it to BGR
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    channels = pixels.shape[2]
    if channels in (1, 2) or mode in ("L", "LA", "I;16", "I;16B", "I;16L", "I", "1"):
        # cv2 expands grey+alpha to BGRA and 1-bit to grey; report what the file held.
        conversions.append("grayscale->rgb")
    if channels == 2:  # (H, W, 2) grey + alpha, not produced by cv2 today
        pixels = np.concatenate([np.repeat(pixels[:, :, :1], 3, axis=2), pixels[:, :, 1:]], 2)
        channels = 4
    if channels == 1:
        rgb = np.repeat(pixels, 3, axis=2)
    elif channels == 3:
        rgb = pixels[:, :, ::-1]
    elif channels == 4:
        alpha = pixels[:, :, 3:4].astype(np.uint16)
        rgb = ((pixels[:, :, 2::-1].astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)
        conversions.append("rgba->rgb")
    else:
        raise ImageCheckError(
            path, "not-an-image", f"{channels} channels (mode {mode}); expected 1, 3 or 4"
        )
    return np.ascontiguousarray(rgb, dtype=np.uint8), tuple(conversions)


#: what ``letterbox`` fills the margins with: the ImageNet mean colour (RGB), which the trainer's
#: normalisation maps to about zero, so a margin carries no signal into the first convolution
LETTERBOX_FILL = (124, 116, 104)


def letterbox(img: np.ndarray, dst_hw: tuple[int, int], fill: Sequence[int] = LETTERBOX_FILL) -> np.ndarray:
    """Resize ``img`` (H, W, 3) uint8 into ``dst_hw`` keeping its aspect ratio, the margins filled
    with ``fill`` (the aspect-preserving resize of Almazan et al. 2018, "Re-ID done right":
    pad, do not stretch). Bilinear, as the stretching resize of the HDF5 writer."""
    from reidaug.pose.keypoints import letterbox_geometry

    (th, tw), (h, w) = dst_hw, img.shape[:2]
    _, (nh, nw), (top, left) = letterbox_geometry((h, w), (th, tw))
    out = np.empty((th, tw, 3), np.uint8)
    out[...] = np.asarray(fill, np.uint8)
    out[top:top + nh, left:left + nw] = (img if (nh, nw) == (h, w)
                                         else cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR))
    return out


def encode_png(rgb: np.ndarray) -> bytes:
    """Lossless PNG bytes of an RGB uint8 image (what ingest stores after a conversion)."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise DataError(f"PNG encoding failed for an image of shape {rgb.shape}")
    return buf.tobytes()


def decode_stored(data: bytes | np.ndarray) -> np.ndarray:
    """Decode bytes that ingest stored (8-bit, 3-channel JPEG or PNG) into RGB uint8 (H, W, 3).

    Uses the same flags as :func:`decode_image` (``IMREAD_UNCHANGED``: no EXIF rotation), so
    the pixels are exactly the ones ingest checked.
    """
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data
    pixels = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise DataError(
            f"stored image bytes do not decode to an 8-bit 3-channel image "
            f"(got {None if pixels is None else (pixels.shape, pixels.dtype)}); the cache entry is damaged: "
            "re-run with --force ingest"
        )
    return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)


# --------------------------------------------------------------------------------------------
# Picture sheets (inspect, score-posegan, the generators' sample grids)
# --------------------------------------------------------------------------------------------


def image_grid(rows: Sequence[Sequence[np.ndarray]], out_png: Path, *, row_labels: Sequence[str] | None = None,
               col_labels: Sequence[str] | None = None, cell_hw: tuple[int, int] = (128, 64)) -> Path:
    """Write rows of RGB uint8 images (any sizes; resized to ``cell_hw``) as one labelled PNG."""
    from PIL import ImageDraw

    ch, cw = cell_hw
    pad, label_w, label_h = 4, (110 if row_labels else 0), (16 if col_labels else 0)
    ncols = max((len(r) for r in rows), default=0)
    width = label_w + ncols * (cw + pad) + pad
    height = label_h + len(rows) * (ch + pad) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for j, text in enumerate(col_labels or []):
        draw.text((label_w + pad + j * (cw + pad), 2), str(text)[:14], fill=(0, 0, 0))
    for i, row in enumerate(rows):
        y = label_h + pad + i * (ch + pad)
        if row_labels:
            draw.text((2, y + ch // 2 - 6), str(row_labels[i])[:18], fill=(0, 0, 0))
        for j, img in enumerate(row):
            if img is None:
                continue
            cell = cv2.resize(np.ascontiguousarray(img), (cw, ch), interpolation=cv2.INTER_AREA)
            canvas.paste(Image.fromarray(cell), (label_w + pad + j * (cw + pad), y))
    out_png = Path(out_png)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    write_bytes(out_png, buf.getvalue())
    return out_png
