"""Look inside a reidaug HDF5 file: a summary table, a verification, a picture of samples.

``summary`` prints what torchreid prints for a dataset (ids / images / cameras per split,
Zhou et al., "Torchreid", 2019) plus what this format adds: sources, label schemes, image
sizes and storage. ``verify`` is :func:`reidaug.data.h5format.verify` (checksums and field
invariants). ``grid`` draws samples with rows = sources and columns = cameras, the figure
GAN-augmentation papers show (e.g. CamStyle, Zhong et al., CVPR 2018, Fig. 1).
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from reidaug.data.h5format import Problem, SplitMeta, open_h5, verify
from reidaug.data.images import image_grid
from reidaug.errors import DataError
from reidaug.io.atomic import atomic_path, write_png
from reidaug.pose.keypoints import rescale_keypoints

__all__ = ["summary", "verify", "grid", "pose_grid", "fakes_grid", "compare_fakes_grid", "Problem"]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def fmt(r: list[str]) -> str:  # the first column left-aligned, the others right-aligned
        return "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))

    return [fmt(header), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows)]


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def summary(path: str | os.PathLike[str]) -> str:
    """A text summary: file attributes, then per split ids/images/cameras/sources/schemes/sizes."""
    p = Path(path)
    with open_h5(p) as f:
        info = f.info
        size = (
            f"{info.image_size[0]}x{info.image_size[1]} (HxW)" if info.image_size else "native sizes"
        ) + (", aspect kept (padded)" if info.image_resize == "pad" else "")
        enc = info.image_encoding + (
            f", {info.image_compression}" if info.image_encoding == "raw" else ""
        )
        out = [
            f"{p} ({_mb(p.stat().st_size)})",
            f"  format v{info.format_version}, {info.created_by}; pipeline key "
            f"{info.pipeline_key[:12] or '-'}; stages: {', '.join(info.stage_keys) or '-'}",
            f"  images: {enc}, {size}; labels: {info.label_smoothing}, {info.num_classes} classes, "
            f"targets {info.target_storage}",
            "",
        ]
        header = ["split", "ids", "images", "cameras", "real", "fake", "image size (native HxW)", "stored"]
        rows = []
        breakdown = []
        for split in f.splits:
            m = f.meta(split)
            ids = np.unique(m.pid[m.pid >= 0]).size
            hw = Counter(map(tuple, m.native_hw.tolist()))
            hw_s = ", ".join(f"{h}x{w}" for (h, w), _ in hw.most_common(2)) + (" ..." if len(hw) > 2 else "")
            ds = f.h5[split]["images"]
            rows.append([split, str(ids), str(len(m)), str(np.unique(m.camid[m.camid >= 0]).size),
                         str(int((~m.is_fake).sum())), str(int(m.is_fake.sum())), hw_s or "-",
                         # vlen data lives in the global heap, which get_storage_size() omits
                         _mb(ds.id.get_storage_size()) if ds.dtype.kind != "O" else "in file"])
            src = Counter(m.source_names.get(int(c), f"?{c}") for c in m.source)
            parts = [f"{split}: sources " + ", ".join(f"{k} {v}" for k, v in sorted(src.items()))]
            if m.label_scheme is not None:
                sch = Counter(m.label_scheme_names.get(int(c), f"?{c}") for c in m.label_scheme)
                parts.append("label schemes " + ", ".join(f"{k} {v}" for k, v in sorted(sch.items())))
            cams = Counter(int(c) for c in m.camid)
            parts.append("cameras " + ", ".join(f"{c if c >= 0 else 'none'}: {n}" for c, n in sorted(cams.items())))
            if m.keypoints is not None:
                parts.append(f"keypoints on {int(np.isfinite(m.keypoints[:, 0, 0]).sum())} images")
            breakdown.append("; ".join(parts))
        out += _table(header, rows)
        out += ["", *breakdown]
    return "\n".join(out)


def grid(path: str | os.PathLike[str], out_png: str | os.PathLike[str], *,
         split: str = "train", per_cell: int = 3, cell_height: int = 128, seed: int = 0) -> Path:
    """Write a PNG of samples: rows = sources, columns = cameras, ``per_cell`` images each.

    A camera-style fake sits in the column of its target camera (the style it was given).

    Each row is labelled with its source, each column with its camera; empty cells stay grey.
    Samples are drawn at random with ``seed``. Written atomically; returns the path.
    """
    from PIL import Image, ImageDraw

    import cv2

    rng = np.random.default_rng(seed)
    with open_h5(path) as f:
        m = f.meta(split)
        if len(m) == 0:
            raise DataError(f"{path}: split {split!r} is empty; nothing to draw.")
        sources = sorted(set(int(c) for c in m.source))
        # a camera-style fake belongs in the column of the camera whose style it has (its target)
        shown_cam = np.where(m.gen_target_camid >= 0, m.gen_target_camid, m.camid)
        cams = sorted(set(int(c) for c in shown_cam))
        ch = cell_height
        cw = ch // 2  # re-ID crops are 2:1 (H:W)
        label_w, label_h, pad = 90, 18, 4
        width = label_w + len(cams) * (per_cell * (cw + pad) + pad * 2)
        height = label_h + len(sources) * (ch + label_h + pad * 2)
        canvas = Image.new("RGB", (width, height), (255, 255, 255))
        draw = ImageDraw.Draw(canvas)
        for ci, cam in enumerate(cams):
            x0 = label_w + ci * (per_cell * (cw + pad) + pad * 2)
            draw.text((x0 + pad, 3), f"camera {cam}" if cam >= 0 else "no camera", fill=(0, 0, 0))
        for ri, code in enumerate(sources):
            y0 = label_h + ri * (ch + label_h + pad * 2)
            draw.text((4, y0 + ch // 2), m.source_names.get(code, f"?{code}"), fill=(0, 0, 0))
            for ci, cam in enumerate(cams):
                x0 = label_w + ci * (per_cell * (cw + pad) + pad * 2)
                rows = np.flatnonzero((m.source == code) & (shown_cam == cam))
                pick = rng.choice(rows, size=min(per_cell, rows.size), replace=False) if rows.size else []
                for k in range(per_cell):
                    x = x0 + pad + k * (cw + pad)
                    if k < len(pick):
                        i = int(pick[k])
                        img = cv2.resize(f.read_image(split, i), (cw, ch), interpolation=cv2.INTER_AREA)
                        canvas.paste(Image.fromarray(img), (x, y0))
                        draw.text((x, y0 + ch + 2), f"id {m.pid[i]}", fill=(60, 60, 60))
                    else:
                        draw.rectangle([x, y0, x + cw - 1, y0 + ch - 1], fill=(200, 200, 200))
    with atomic_path(out_png) as tmp:
        canvas.save(tmp, format="PNG")
    return Path(out_png)


def pose_grid(path: str | os.PathLike[str], out_png: str | os.PathLike[str], *,
              split: str = "train", count: int = 16, scale: int = 2, seed: int = 0) -> Path:
    """Write a PNG of ``count`` crops with their stored keypoints drawn on (4 per row).

    Scores are not thresholded: a keypoint with score 0 (not found) is not drawn, every other
    one is, so a wrong skeleton shows. Crops are upscaled by ``scale`` so joints are visible.
    """
    import cv2

    from reidaug.pose.skeleton import draw_skeleton

    rng = np.random.default_rng(seed)
    with open_h5(path) as f:
        m = f.meta(split)
        if m.keypoints is None:
            raise DataError(
                f"{path}: split {split!r} has no keypoints. Add an extract-pose stage and bind "
                "export-hdf5's inputs.keypoints to extract-pose.keypoints, then re-run the pipeline."
            )
        have = np.flatnonzero(np.nan_to_num(m.keypoints[..., 2]).max(axis=1) > 0)
        if have.size == 0:
            raise DataError(f"{path}: no image of split {split!r} has a detected pose to draw")
        pick = np.sort(rng.choice(have, size=min(count, have.size), replace=False))
        tiles = []
        for i in pick:
            img = f.read_image(split, int(i))
            h, w = img.shape[:2]
            big = cv2.resize(img, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC)
            kp = rescale_keypoints(np.nan_to_num(m.keypoints[i]), (h, w), (h * scale, w * scale))
            tiles.append(draw_skeleton(big, kp, threshold=0.0))
    th = max(t.shape[0] for t in tiles)
    tw = max(t.shape[1] for t in tiles)
    cols = 4
    rows = (len(tiles) + cols - 1) // cols
    sheet = np.full((rows * (th + 4) + 4, cols * (tw + 4) + 4, 3), 255, np.uint8)
    for n, t in enumerate(tiles):
        r, c = divmod(n, cols)
        sheet[4 + r * (th + 4):4 + r * (th + 4) + t.shape[0], 4 + c * (tw + 4):4 + c * (tw + 4) + t.shape[1]] = t
    return write_png(out_png, sheet)  # a failed encode raises DataError, never an empty file


def _fakes_of(m: SplitMeta, source: str | None) -> np.ndarray:
    """Rows of ``m``'s fakes that have an origin (of ``source`` only, when given), in the order the grids
    show them: by source, then target camera / pose, then row."""
    rows = np.flatnonzero(m.origin >= 0)
    if source is not None:
        rows = rows[np.isin(m.source[rows], [c for c, n in m.source_names.items() if n == source])]
    return rows[np.lexsort((rows, m.gen_pose_id[rows], m.gen_target_camid[rows], m.source[rows]))]


def fakes_grid(path: str | os.PathLike[str], out_png: str | os.PathLike[str], *,
               split: str = "train", count: int = 8, seed: int = 0, source: str | None = None) -> Path | None:
    """Write a PNG of ``count`` real images (first column) each followed by its fakes.

    The fakes of an origin are sorted by source, then target camera / pose, and labelled
    (e.g. ``camstyle c0->c1``), so a fake that lost its person or its colours shows beside
    the image it came from. ``source`` (e.g. ``camstyle``) keeps one generated set only. Returns
    None (and writes nothing) when the split has no fakes (of that source).
    """
    rng = np.random.default_rng(seed)
    with open_h5(path) as f:
        m = f.meta(split)
        fake_rows = _fakes_of(m, source)
        if fake_rows.size == 0:
            return None
        origins = np.unique(m.origin[fake_rows])
        pick = np.sort(rng.choice(origins, size=min(count, origins.size), replace=False))
        rows, labels, width = [], [], 1
        for o in pick:
            fakes = fake_rows[m.origin[fake_rows] == o]  # in display order already
            rows.append([f.read_image(split, int(o))] + [f.read_image(split, int(i)) for i in fakes])
            targets = [f"c{m.gen_target_camid[i]}" if m.gen_target_camid[i] >= 0 else
                       (f"p{m.gen_pose_id[i]}" if m.gen_pose_id[i] >= 0 else "?") for i in fakes]
            labels.append(f"id {m.pid[o]} c{m.camid[o]}->{','.join(targets)}")
            width = max(width, len(rows[-1]))
    cols = ["real"] + [f"fake {j}" for j in range(1, width)]
    return image_grid(rows, Path(out_png), row_labels=labels, col_labels=cols, cell_hw=(128, 64))


def compare_fakes_grid(real: str | os.PathLike[str], files: Mapping[str, str | os.PathLike[str]],
                       out_png: str | os.PathLike[str], *, split: str = "train", count: int = 8, seed: int = 0,
                       source: str | None = None) -> Path:
    """Write a PNG of ``count`` real images of ``real`` (first column), each beside its fake in every file of
    ``files`` (label -> file: one column each, in order): what each generator made of the same image, e.g.
    CycleGAN, PTGAN and SPGAN renders of one synthetic person.

    A fake's origin is matched to ``real``'s image by the path the export stored for it, so the files need
    not share row order, only the ingest. Only origins with a fake in every file are drawn; their first
    fake (by source, then target camera / pose) stands for each file.
    """
    if not files:
        raise DataError("compare_fakes_grid: no files to compare. Give at least one LABEL=FILE.")
    with open_h5(real) as f:
        m = f.meta(split)
        row_of = {p: i for i, p in enumerate(m.path) if m.origin[i] < 0}
    firsts: list[dict[str, int]] = []  # per file: real path -> row of its first fake
    for label, path in files.items():
        with open_h5(path) as f:
            fm = f.meta(split)
            fake = _fakes_of(fm, source)
            if fake.size == 0:
                raise DataError(f"{path} ({label}): split {split!r} has no fakes"
                                f"{' of source ' + repr(source) if source else ''} to compare. Fix: give an "
                                "export that includes the generated set (export-hdf5 sets: [real, <source>]).")
            first: dict[str, int] = {}
            for i in fake:
                first.setdefault(fm.path[int(fm.origin[i])], int(i))
            firsts.append(first)
    common = sorted(set(row_of).intersection(*firsts))
    if not common:
        raise DataError(f"no image of {real} ({split}) has a fake in every file of {', '.join(files)} (origins "
                        "are matched by path). Fix: compare exports made from the same ingest as the real file.")
    rng = np.random.default_rng(seed)
    pick = [common[j] for j in np.sort(rng.choice(len(common), size=min(count, len(common)), replace=False))]
    rows: list[list[np.ndarray]] = [[] for _ in pick]
    with open_h5(real) as f:
        for r, p in enumerate(pick):
            rows[r].append(f.read_image(split, row_of[p]))
        labels = [f"id {m.pid[row_of[p]]} c{m.camid[row_of[p]]}" for p in pick]
    for first, path in zip(firsts, files.values()):
        with open_h5(path) as f:
            for r, p in enumerate(pick):
                rows[r].append(f.read_image(split, first[p]))
    return image_grid(rows, Path(out_png), row_labels=labels, col_labels=["real", *files], cell_hw=(128, 64))
