"""decode_image: RGB uint8 out, named conversions, and a named reason for every bad file."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from reidaug.data import images
from reidaug.data.images import IMAGE_REASONS, ImageCheckError, decode_image
from reidaug.errors import DataError


def _write(path: Path, bgr: np.ndarray, ext: str = ".png") -> Path:
    ok, buf = cv2.imencode(ext, bgr)
    assert ok
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())
    return path


def _noise(h: int = 64, w: int = 32, c: int = 3, seed: int = 0) -> np.ndarray:
    shape = (h, w, c) if c > 1 else (h, w)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _reason(path: Path, **kwargs) -> str:
    with pytest.raises(ImageCheckError) as info:
        decode_image(path, **kwargs)
    assert info.value.reason in IMAGE_REASONS
    assert str(path) in str(info.value)  # every message names the file
    return info.value.reason


def test_png_decodes_to_rgb_order_without_conversions(tmp_path):
    bgr = np.zeros((8, 4, 3), np.uint8)
    bgr[..., 2] = 200  # red in OpenCV's BGR order
    out = decode_image(_write(tmp_path / "red.png", bgr))
    assert out.rgb.shape == (8, 4, 3) and out.rgb.dtype == np.uint8
    assert out.rgb[0, 0].tolist() == [200, 0, 0]
    assert out.conversions == () and out.original_mode == "RGB"
    assert out.rgb.flags["C_CONTIGUOUS"]


def test_jpeg_round_trip_is_close(tmp_path):
    bgr = np.full((32, 16, 3), (30, 120, 220), np.uint8)
    out = decode_image(_write(tmp_path / "a.jpg", bgr, ".jpg"))
    assert np.abs(out.rgb.astype(int) - [220, 120, 30]).max() <= 3


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_jpeg_is_detected(tmp_path, keep):
    data = _write(tmp_path / "full.jpg", _noise(), ".jpg").read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: int(len(data) * keep)])
    assert _reason(cut) == "truncated"


def test_jpeg_missing_only_its_eoi_marker_is_truncated(tmp_path):
    data = _write(tmp_path / "full.jpg", _noise(), ".jpg").read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[:-2])
    assert _reason(cut) == "truncated"


def test_jpeg_with_bytes_after_eoi_is_accepted(tmp_path):
    path = _write(tmp_path / "a.jpg", _noise(), ".jpg")
    path.write_bytes(path.read_bytes() + b"camera trailer\x00\x01")
    assert decode_image(path).rgb.shape == (64, 32, 3)


def test_truncated_png_is_detected(tmp_path):
    data = _write(tmp_path / "full.png", _noise()).read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) - 12])  # drops exactly the IEND chunk
    assert _reason(cut) == "truncated"


def test_file_system_failures_have_their_own_reasons(tmp_path):
    assert _reason(tmp_path / "nope.jpg") == "missing"
    link = tmp_path / "link.jpg"
    link.symlink_to(tmp_path / "gone.jpg")
    assert _reason(link) == "dangling-symlink"
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert _reason(tmp_path / "empty.jpg") == "zero-byte"
    (tmp_path / "folder.jpg").mkdir()
    assert _reason(tmp_path / "folder.jpg") == "unreadable"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_permission_denied_is_unreadable(tmp_path):
    path = _write(tmp_path / "a.png", _noise())
    path.chmod(0)
    try:
        assert _reason(path) == "unreadable"
    finally:
        path.chmod(0o644)


def test_text_named_jpg_is_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    assert _reason(path) == "not-an-image"


def test_error_is_a_data_error_with_detail(tmp_path):
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(DataError) as info:
        decode_image(tmp_path / "e.png")
    assert info.value.detail and "0 bytes" in info.value.detail


def test_grayscale_is_repeated_to_three_channels(tmp_path):
    grey = _noise(c=1)
    out = decode_image(_write(tmp_path / "g.png", grey))
    assert out.conversions == ("grayscale->rgb",) and out.original_mode == "L"
    assert (out.rgb == grey[:, :, None]).all()


def test_sixteen_bit_is_scaled_not_truncated(tmp_path):
    values = np.array([[0, 257, 32896, 65535, 255]], np.uint16)  # 255 would be 0 if truncated
    out = decode_image(_write(tmp_path / "g16.png", values))
    assert out.conversions == ("16bit->8bit", "grayscale->rgb")
    assert out.rgb[0, :, 0].tolist() == [0, 1, 128, 255, 1]

    colour = np.zeros((2, 2, 3), np.uint16)
    colour[..., 2] = 65535  # red, BGR order
    out = decode_image(_write(tmp_path / "c16.png", colour))
    assert out.conversions == ("16bit->8bit",) and out.original_mode == "RGB;16"
    assert out.rgb[0, 0].tolist() == [255, 0, 0]


def test_rgba_is_composited_on_black(tmp_path):
    rgba = np.zeros((1, 3, 4), np.uint8)
    rgba[0, :, :3] = (200, 100, 50)
    rgba[0, :, 3] = (255, 128, 0)  # opaque, half, transparent
    path = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(path)
    out = decode_image(path)
    assert out.conversions == ("rgba->rgb",) and out.original_mode == "RGBA"
    assert out.rgb[0].tolist() == [[200, 100, 50], [100, 50, 25], [0, 0, 0]]


def test_grey_alpha_names_both_conversions(tmp_path):
    path = tmp_path / "la.png"
    Image.fromarray(np.full((2, 2, 2), 255, np.uint8), "LA").save(path)
    out = decode_image(path)
    assert out.conversions == ("grayscale->rgb", "rgba->rgb")
    assert (out.rgb == 255).all()


def test_palette_is_expanded(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[:2] = (255, 0, 0)
    path = tmp_path / "p.png"
    Image.fromarray(rgb).convert("P").save(path)
    out = decode_image(path)
    assert out.conversions == ("palette->rgb",) and out.original_mode == "P"
    assert out.rgb[0, 0].tolist() == [255, 0, 0] and out.rgb[3, 3].tolist() == [0, 0, 0]


def test_non_ascii_path_decodes(tmp_path):
    path = _write(tmp_path / "ñandú" / "0001_c1s1_000001_00.jpg", _noise(), ".jpg")
    assert decode_image(path).rgb.shape == (64, 32, 3)


def test_huge_image_is_rejected_from_its_header_without_decoding(tmp_path, monkeypatch):
    # 10000 x 10000 = 100 M pixels (300 MB as RGB); a grey JPEG of it is ~1 MB, made in 0.1 s.
    path = _write(tmp_path / "huge.jpg", np.zeros((10_000, 10_000), np.uint8), ".jpg")

    def no_decode(*args, **kwargs):
        raise AssertionError("the pixels of a too-large image must not be decoded")

    monkeypatch.setattr(images.cv2, "imdecode", no_decode)
    with pytest.raises(ImageCheckError) as info:
        decode_image(path)
    assert info.value.reason == "too-large"
    assert "10000x10000" in info.value.detail and "50,000,000" in info.value.detail


def test_max_pixels_is_configurable(tmp_path):
    path = _write(tmp_path / "a.png", _noise(h=20, w=10))
    assert _reason(path, max_pixels=199) == "too-large"
    assert decode_image(path, max_pixels=200).rgb.shape == (20, 10, 3)
