"""Stage ``generate-colortransfer``: the non-GAN camera-style baseline.

Every train image of camera s is rendered in the colour statistics of each other camera t
(``target_cams`` narrows the targets, ``fakes_per_image`` draws that many, seeded), by a fixed
per-channel Lab map from camera s's statistics to camera t's (:mod:`reidaug.gen.colortransfer`:
``reinhard`` mean/std or ``histogram`` matching). Statistics come from the *train* images only,
so the test split is never looked at.

The output has exactly the layout of ``generate-camstyle``'s fakes (same names, provenance and
columns; ``gen_checksum`` is the sha256 of the method and the lookup tables), so it binds to the
``camstyle`` input of ``assign-labels`` and ``export-hdf5`` and is exported as the ``camstyle``
set: an arm of the campaign swaps ``generate-camstyle.fakes`` for ``generate-colortransfer.fakes``
and nothing else. No model, no device: it runs on the CPU at thousands of images a second.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from reidaug.pipeline.context import StageContext
from reidaug.pipeline.stage import OutputSize, StageSpec
from reidaug.validation import MAX_SEED


class GenerateColorTransferParams(OutputSize):
    DEFAULT_SIZE: ClassVar[str] = "each origin image's own size"

    method: Literal["reinhard", "histogram"] = Field(
        "reinhard", description="reinhard (camera mean/std in Lab) | histogram (camera CDF in Lab)")
    target_cams: list[int] | None = Field(None, min_length=1,
                                          description="cameras to render into (default: every train camera)")
    fakes_per_image: int | None = Field(None, ge=1, description="draw this many targets per image (default: all)")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="for drawing targets when fakes_per_image is set")


def _stats(ctx: StageContext):
    """Lab statistics of every train camera, over all train images (computed once per process)."""
    from reidaug.data.images import decode_stored
    from reidaug.gen.colortransfer import camera_stats

    def images():
        for arrays, _ in ctx.input("dataset").iter_chunks():
            for img, cam, split in zip(arrays.get("image", []), arrays.get("camid", []), arrays.get("split", [])):
                if split == "train":
                    yield int(cam), decode_stored(img)

    return ctx.memo("colortransfer-stats", lambda: camera_stats(images()))


def _wanted(ctx: StageContext, available: list[int]) -> list[int]:
    from reidaug.errors import ConfigError

    p: GenerateColorTransferParams = ctx.params
    if len(available) < 2:
        raise ConfigError(f"generate-colortransfer needs train images from 2 or more cameras; the dataset "
                          f"{ctx.input('dataset').path} has train images from cameras {available}. "
                          "Fix: ingest a dataset with several cameras.")
    wanted = available if p.target_cams is None else sorted(set(p.target_cams))
    unknown = sorted(set(wanted) - set(available))
    if unknown:
        raise ConfigError(f"params.target_cams {unknown} have no train images; the train cameras are {available}. "
                          "Fix: list cameras from those.")
    return wanted


def plan(ctx: StageContext) -> int:
    _wanted(ctx, _stats(ctx).cameras)
    return len(ctx.input("dataset").chunk_paths())


def _tables(ctx: StageContext, source: int, target: int):
    import hashlib

    from reidaug.gen.colortransfer import lookup_tables

    p: GenerateColorTransferParams = ctx.params

    def make():
        tables = lookup_tables(_stats(ctx), source, target, p.method)
        digest = hashlib.sha256(p.method.encode() + tables.tobytes()).hexdigest()
        return tables, f"colortransfer-{p.method}:{digest}"

    return ctx.memo(f"colortransfer-tables|{p.method}|{source}|{target}", make)


def run_chunk(ctx: StageContext, index: int) -> None:
    import cv2
    import numpy as np

    from reidaug.data.images import decode_stored, encode_png
    from reidaug.gen.colortransfer import apply_tables
    from reidaug.pipeline.context import read_h5_chunk
    from reidaug.stages.generate_camstyle import draw_targets, fake_name

    p: GenerateColorTransferParams = ctx.params
    arrays, _ = read_h5_chunk(ctx.input("dataset").chunk_paths()[index])
    n = len(arrays.get("path", []))
    jobs = draw_targets([int(c) for c in arrays["camid"]] if n else [], arrays["split"] if n else [],
                        _wanted(ctx, _stats(ctx).cameras), p.fakes_per_image, ctx.rng(index))
    rows, targets = [j.row for j in jobs], [j.target for j in jobs]
    images, checksums = [], []
    for row, target in zip(rows, targets):
        source = int(arrays["camid"][row])
        tables, checksum = _tables(ctx, source, target)
        fake = apply_tables(decode_stored(arrays["image"][row]), tables)
        out_h, out_w = p.out_hw(fake.shape[:2])
        if (out_h, out_w) != fake.shape[:2]:
            fake = cv2.resize(fake, (out_w, out_h), interpolation=cv2.INTER_AREA)
        images.append(encode_png(fake))
        checksums.append(checksum)
    paths = [str(v) for v in arrays["path"]] if n else []
    cams = [int(arrays["camid"][r]) for r in rows]
    ctx.write_chunk(index, {
        "image": images,
        "path": [fake_name(paths[r], c, t) for r, c, t in zip(rows, cams, targets)],
        "origin_path": [paths[r] for r in rows],
        "origin_record": np.asarray([int(arrays["record_index"][r]) for r in rows], np.int64),
        "pid": np.asarray([int(arrays["pid"][r]) for r in rows], np.int64),
        "camid": np.asarray(cams, np.int16),
        "target_camid": np.asarray(targets, np.int16),
        "gen_checksum": checksums,
    }, attrs={"method": p.method})


def finalize(ctx: StageContext) -> dict[str, Any]:
    from collections import Counter

    p: GenerateColorTransferParams = ctx.params
    total, per_target = 0, Counter()
    for arrays, _ in ctx.iter_own_chunks():
        total += len(arrays.get("path", []))
        per_target.update(int(t) for t in arrays.get("target_camid", []))
    stats = _stats(ctx).summary()
    report = [f"{total} colour-transfer fakes ({p.method}; "
              + ", ".join(f"to camera {c}: {k}" for c, k in sorted(per_target.items())) + ")",
              "train Lab statistics: " + "; ".join(
                  f"camera {c} mean {v['mean']} std {v['std']}" for c, v in stats.items())]
    return {"num_fakes": total, "method": p.method,
            "per_target_camera": {str(k): v for k, v in sorted(per_target.items())},
            "camera_lab_stats": stats, "report": report}


SPEC = StageSpec(
    name="generate-colortransfer", version=1,
    description="camera style without a GAN: each train image moved to the other cameras' Lab colour statistics",
    params=GenerateColorTransferParams, run_chunk=run_chunk, plan=plan, finalize=finalize,
    inputs={"dataset": "ingest.dataset"},
    outputs={"fakes": "chunks"},
)
