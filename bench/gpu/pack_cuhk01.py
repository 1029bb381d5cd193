"""Pack CUHK01 and its MoveNet keypoints small enough to travel to a lent GPU machine.

The device tool carries at most 64 MiB with the working tree; CUHK01's PNGs are 75 MB. This
writes, under ``--out`` (default ``.gpu/`` in the checkout, which ``.git/info/exclude`` should
ignore):

- ``cuhk01/images/PPPPIII.webp``: every crop as *lossless* WebP (44 MB; decoded pixels are
  checked equal to the PNG's, so the GPU run trains on the same pixels as the CPU run), and
- ``cuhk01_movenet.csv``: the keypoints of a finished ``extract-pose`` entry as an OpenPose-18
  annotation CSV (``name:keypoints_y:keypoints_x``, looked up by file name by extract-pose's
  ``openpose-csv`` backend): points scored <= ``--threshold`` are written missing, coordinates
  are rounded to whole pixels of the 60x160 crop (the only change from the CPU run's keypoints), and
- ``osnet_x0_25_msmt17.onnx``: the judge of the scoring stages (0.9 MB; shared/ does not travel).

    python bench/gpu/pack_cuhk01.py --keypoints WORKSPACE/cache/extract-pose/1a/1adc...

The GPU recipe that reads them is ``bench/gpu/issue7.sh``.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    from reidaug.pipeline.context import read_h5_chunk
    from reidaug.pose.openpose import write_openpose_csv

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cuhk01")
    ap.add_argument("--keypoints", type=Path, required=True, help="a finished extract-pose cache entry")
    ap.add_argument("--threshold", type=float, default=0.3)
    ap.add_argument("--out", type=Path, default=ROOT / ".gpu")
    ap.add_argument("--judge", type=Path, default=ROOT.parent / "shared" / "models" / "osnet_x0_25_msmt17.onnx")
    args = ap.parse_args(argv)

    pngs = sorted((args.data / "images").glob("*.png"))
    if not pngs:
        raise SystemExit(f"{args.data}/images holds no .png: pass --data CUHK01_FOLDER")
    chunks = sorted((args.keypoints / "chunks").glob("*.h5"))
    if not chunks:
        raise SystemExit(f"{args.keypoints}/chunks holds no .h5: pass a finished extract-pose cache entry")
    images = args.out / "cuhk01" / "images"
    images.mkdir(parents=True, exist_ok=True)
    total = 0
    for png in pngs:
        im = cv2.imread(str(png), cv2.IMREAD_COLOR)
        ok, buf = cv2.imencode(".webp", im, [cv2.IMWRITE_WEBP_QUALITY, 101])  # > 100: lossless
        if not ok or not np.array_equal(cv2.imdecode(buf, cv2.IMREAD_COLOR), im):
            raise SystemExit(f"{png}: lossless WebP round trip failed")
        (images / f"{png.stem}.webp").write_bytes(buf.tobytes())
        total += len(buf)
    table: dict[str, np.ndarray] = {}
    for chunk in chunks:
        arrays, _ = read_h5_chunk(chunk)
        for path, kp in zip(arrays["path"], arrays["keypoints"]):
            table[Path(path).stem + ".webp"] = kp
    missing = {f"{p.stem}.webp" for p in pngs} - table.keys()
    if missing:
        raise SystemExit(f"{len(missing)} images have no keypoints in {args.keypoints}, e.g. {sorted(missing)[:3]}")
    write_openpose_csv(args.out / "cuhk01_movenet.csv", table, threshold=args.threshold)
    if not args.judge.is_file():
        raise SystemExit(f"no judge at {args.judge}: pass --judge osnet_x0_25_msmt17.onnx (shared/models)")
    shutil.copyfile(args.judge, args.out / args.judge.name)
    print(f"{len(pngs)} crops as lossless WebP ({total / 1e6:.1f} MB) and {len(table)} poses "
          f"-> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
